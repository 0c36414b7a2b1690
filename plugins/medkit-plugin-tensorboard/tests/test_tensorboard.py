"""A real tiny run with the plugin installed: its event files hold exactly ``metrics/steps.jsonl``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medkit.testing import NOT_TERMS, plugin_run_env, run_two_stages

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    """The plugin and the synthetic modalities installed (entry points) for a subprocess run."""
    return plugin_run_env(tmp_path, "medkit-plugin-tensorboard", "tensorboard", "medkit_plugin_tensorboard", SRC)


def _run(run_dir: Path, env: dict[str, str], steps: int = 3, strategy: str = "sequential",
         extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return run_two_stages(run_dir, env, strategy=strategy, steps=steps, extra=extra)


def _accumulator(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0,
                                                                        "tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_event_scalars_equal_steps_jsonl(tmp_path: Path, env: dict[str, str]) -> None:
    out = _run(tmp_path / "run", env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")), "no event file"
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 6
    acc = _accumulator(tmp_path / "run")
    tags = acc.Tags()["scalars"]
    for key in ("loss", "lr"):
        events = acc.Scalars(f"train/{key}")
        expected = [((s["stage"] - 1) * 3 + s["step"], s[key]) for s in steps]
        assert [e.step for e in events] == [x for x, _ in expected]
        # TensorBoard stores float32: equal after the same rounding
        assert [np.float32(e.value) for e in events] == [np.float32(v) for _, v in expected], key
    # the held-out matrix: one point per stage and modality it was measured on, at the stage's end
    header, *rows = (tmp_path / "run" / "metrics" / "matrix.csv").read_text().splitlines()
    matrix_tags = [t for t in tags if t.startswith("matrix/")]
    assert matrix_tags, tags
    pretext = [t for t in matrix_tags if t.startswith("matrix/pretext_loss/")]
    assert sorted(t.rsplit("/", 1)[1] for t in pretext) == ["synth_a", "synth_b"]
    a = acc.Scalars("matrix/pretext_loss/synth_a")
    assert [e.step for e in a] == [3, 6]
    images = acc.Tags()["images"]
    assert "matrix/pretext_loss" in images
    img = acc.Images("matrix/pretext_loss")[0]
    assert img.width > 50 and img.height > 50


@pytest.mark.slow
def test_every_loss_kind_of_every_modality_has_its_own_curve(tmp_path: Path, env: dict[str, str]) -> None:
    """A rehearsal run: ``train/<modality>/<term>`` holds exactly the steps of that modality that
    carried that term (a buffer step's distillation loss never lands on an MAE curve), with stage
    boundaries and the config as parameters."""
    steps = 6
    out = _run(tmp_path / "run", env, steps=steps, strategy="rehearsal", extra=("trainer.log_every=2",))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert any(r["role"] == "buffer" for r in rows), "the plan rehearsed no buffer step: the test proves nothing"
    expected: dict[str, dict[int, float]] = {}
    for r in rows:
        at = (r["stage"] - 1) * steps + r["step"]
        terms = {k: v for k, v in r.items() if k not in NOT_TERMS}
        for tag, value in {f"train/{r['modality']}/{k}": v for k, v in terms.items()}.items():
            expected.setdefault(tag, {})[at] = value
    assert {"train/synth_a/mae", "train/synth_a/distill", "train/synth_b/mae"} <= set(expected)
    acc = _accumulator(tmp_path / "run")
    tags = acc.Tags()["scalars"]
    per_modality = {t for t in tags if t.startswith(("train/synth_a/", "train/synth_b/"))}
    assert {t for t in per_modality if not t.endswith("/loss")} == set(expected)
    for tag, points in expected.items():
        got = {e.step: np.float32(e.value) for e in acc.Scalars(tag)}
        assert got == {k: np.float32(v) for k, v in points.items()}, tag
    assert [(e.step, e.value) for e in acc.Scalars("stage/index")] == [(1, 1.0), (steps + 1, 2.0)]
    texts = acc.Tags()["tensors"]
    assert any(t.startswith("run/params") for t in texts) and any(t.startswith("run/stages") for t in texts)
    params = [t for t in texts if t.startswith("run/params")][0]
    table = acc.Tensors(params)[0].tensor_proto.string_val[0].decode()
    assert f"| `trainer.max_steps` | `{steps}` |" in table and "| `run.strategy` | `rehearsal` |" in table


@pytest.mark.slow
def test_matrix_scalars_equal_the_matrix_file(tmp_path: Path, env: dict[str, str]) -> None:
    out = _run(tmp_path / "run", env, steps=2)
    assert out.returncode == 0, out.stderr[-3000:]
    acc = _accumulator(tmp_path / "run")
    evaluations = json.loads((tmp_path / "run" / "metrics" / "eval.json").read_text())
    for row in evaluations:
        for metric, per in row["metrics"].items():
            for modality, value in per.items():
                if value is None:
                    continue
                events = {e.step: e.value for e in acc.Scalars(f"matrix/{metric}/{modality}")}
                after = row["after_stage"] if "after_stage" in row else row["stage"] + 1  # 1-based records
                assert np.float32(events[after * 2]) == np.float32(value)


@pytest.mark.slow
def test_off_switch_writes_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    out = _run(tmp_path / "run", {**env, "MEDKIT_TENSORBOARD": "0"}, steps=1)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_only_rank_zero_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.api import RunInfo, StageInfo

    import medkit_plugin_tensorboard as plugin

    run = RunInfo(run_dir=tmp_path / "r", config={"trainer": {"max_steps": 2}, "run": {}}, stages=[["a"]])
    stage = StageInfo(index=0, modalities=["a"], max_steps=2)
    monkeypatch.setenv("RANK", "1")
    plugin.medkit_on_run_start(run=run)
    plugin.medkit_on_stage_start(run=run, stage=stage)
    plugin.medkit_on_step_end(run=run, stage=stage, step=1, metrics={"loss": 1.0}, modality="a")
    plugin.medkit_on_run_end(run=run, results={"matrix": {}})
    assert not (tmp_path / "r").exists()
    monkeypatch.setenv("RANK", "0")
    plugin.medkit_on_run_start(run=run)
    plugin.medkit_on_step_end(run=run, stage=stage, step=1, metrics={"loss": 1.5}, modality="a")
    plugin.medkit_on_run_end(run=run, results={"matrix": {1: {"loss": {"a": 0.5, "b": None}}}})
    acc = _accumulator(tmp_path / "r")
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.5)]
    assert "matrix/loss" in acc.Tags()["images"]
    from medkit_plugin_tensorboard import writer

    assert Path(run.run_dir) not in writer._WRITERS, "the writer is closed and forgotten at run end"
