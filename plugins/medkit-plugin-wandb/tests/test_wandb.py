"""A real two-stage rehearsal run logged by W&B in offline mode, read back from its ``.wandb`` file with
wandb's own reader (``wandb leet inspect --json``): every step's terms under ``train/<modality>/<term>``,
stage boundaries, the matrices and the config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medkit.testing import expected_curves, plugin_run_env, run_two_stages, step_rows

SRC = Path(__file__).resolve().parents[1] / "src"
STEPS = 6
#: logged every second step, so that the test sees what ``log_every`` keeps
EXTRA = ("trainer.log_every=2",)


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    """The plugin and the synthetic modalities installed (entry points) for a subprocess run."""
    home = tmp_path / "wandb-home"  # nothing of this test lands in the user's own W&B folders
    return plugin_run_env(tmp_path, "medkit-plugin-wandb", "wandb", "medkit_plugin_wandb", SRC, drop_prefix="WANDB_",
                          MEDKIT_TENSORBOARD="0", WANDB_MODE="offline", WANDB_SILENT="true",
                          WANDB_CONFIG_DIR=str(home / "config"), WANDB_CACHE_DIR=str(home / "cache"),
                          WANDB_DATA_DIR=str(home / "data"), WANDB_ARTIFACT_DIR=str(home / "artifacts"))


def _records(run_dir: Path) -> list[dict]:
    """The offline run's records, through wandb's own reader of ``.wandb`` files."""
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(files[0])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_the_offline_run_holds_per_modality_losses_stages_matrices_and_config(tmp_path: Path,
                                                                             env: dict[str, str]) -> None:
    run_dir = tmp_path / "run"
    out = run_two_stages(run_dir, env, strategy="rehearsal", steps=STEPS, extra=EXTRA)
    assert out.returncode == 0, out.stderr[-3000:]
    records = _records(run_dir)
    history = [r["history"]["item"] for r in records if r.get("type") == "history"]
    rows = step_rows(run_dir)
    assert any(r["role"] == "buffer" for r in rows), "the plan rehearsed no buffer step: the test proves nothing"
    expected = expected_curves(rows, STEPS)
    assert "train/synth_a/distill" in expected and "train/synth_b/mae" in expected
    logged: dict[str, dict[int, float]] = {}
    for item in history:
        for key, value in item.items():
            if key.startswith(("train/", "stage/", "matrix/")) and isinstance(value, (int, float)):
                logged.setdefault(key, {})[int(item["global_step"])] = value
    # each loss kind of each modality is its own curve, with exactly the steps that carried it
    assert {t for t in logged if t.startswith("train/")} == set(expected)
    for tag, points in expected.items():
        assert logged[tag] == pytest.approx(points, rel=1e-12), tag
    assert not set(expected["train/synth_a/distill"]) & set(expected.get("train/synth_a/mae", {}))
    # stage boundaries at each stage's first global step
    assert logged["stage/index"] == {1: 1, STEPS + 1: 2}
    # the matrix after each stage, equal to eval.json, and the matrices as tables
    for ev in json.loads((run_dir / "metrics" / "eval.json").read_text()):
        for metric, per in ev["metrics"].items():
            for modality, value in per.items():
                if value is not None:
                    assert logged[f"matrix/{metric}/{modality}"][ev["after_stage"] * STEPS] == pytest.approx(value)
    tables = [item for item in history if item.get("matrix/pretext_loss._type") == "table-file"]
    assert len(tables) == 3, "a table after each of the two stages and the final one"
    final = json.loads((run_dir / "wandb").glob("offline-run-*/files/" + tables[-1]["matrix/pretext_loss.path"])
                       .__next__().read_text())
    assert final["columns"] == ["after stage", "synth_a", "synth_b"]
    assert [row[0] for row in final["data"]] == [1, 2] and final["data"][0][2] is None  # synth_b not yet seen
    # the run's config
    (config,) = [r["run"]["config"]["update"] for r in records if r.get("type") == "run"]
    assert config["trainer"]["max_steps"] == STEPS and config["run"]["strategy"] == "rehearsal"
    assert json.loads((run_dir / "wandb.json").read_text())["id"] in str(next(iter(
        (run_dir / "wandb").glob("offline-run-*"))))


def test_off_unless_switched_on_or_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    import medkit_plugin_wandb as plugin

    for k in ("MEDKIT_WANDB", "WANDB_PROJECT", "WANDB_MODE"):
        monkeypatch.delenv(k, raising=False)
    assert not plugin.enabled()
    monkeypatch.setenv("WANDB_PROJECT", "lab")
    assert plugin.enabled()
    monkeypatch.setenv("MEDKIT_WANDB", "off")
    assert not plugin.enabled()


def test_offline_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit_plugin_wandb import logger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert logger.mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert logger.mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert logger.mode() == "disabled"
