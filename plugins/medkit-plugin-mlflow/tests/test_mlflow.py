"""A real two-stage rehearsal run logged to MLflow's local file store, read back with ``MlflowClient``:
every step's terms under ``train/<modality>/<term>``, stage boundaries, the matrices and the config."""

from __future__ import annotations

import json
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
    return plugin_run_env(tmp_path, "medkit-plugin-mlflow", "mlflow", "medkit_plugin_mlflow", SRC,
                          drop_prefix="MLFLOW_", MEDKIT_MLFLOW="1", MEDKIT_TENSORBOARD="0")


@pytest.mark.slow
def test_the_file_store_holds_per_modality_losses_stages_matrices_and_config(
        tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    out = run_two_stages(run_dir, env, strategy="rehearsal", steps=STEPS, extra=EXTRA)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((run_dir / "mlflow.json").read_text())
    assert record["tracking_uri"] == (run_dir / "mlruns").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading a file store, as the plugin wrote it
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    rows = step_rows(run_dir)
    assert any(r["role"] == "buffer" for r in rows), "the plan rehearsed no buffer step: the test proves nothing"
    expected = expected_curves(rows, STEPS)
    # each loss kind of each modality is its own curve, with exactly the steps that carried it
    assert "train/synth_a/distill" in expected and "train/synth_b/mae" in expected
    logged = set(run.data.metrics)
    assert {t for t in logged if t.startswith("train/")} == set(expected)
    for tag, points in expected.items():
        history = {m.step: m.value for m in client.get_metric_history(record["run_id"], tag)}
        assert history == pytest.approx(points, rel=1e-12), tag
    # no distillation value under an MAE curve (the old train/loss mixed them)
    distill_steps = set(expected["train/synth_a/distill"])
    assert not distill_steps & set(expected.get("train/synth_a/mae", {}))
    # stage boundaries at each stage's first global step
    marks = {m.step: m.value for m in client.get_metric_history(record["run_id"], "stage/index")}
    assert marks == {1: 1.0, STEPS + 1: 2.0}
    assert run.data.tags["medkit.stage.2"].startswith("stage 2/2 [synth_b]")
    # the matrix after each stage, equal to eval.json
    for ev in json.loads((run_dir / "metrics" / "eval.json").read_text()):
        for metric, per in ev["metrics"].items():
            for modality, value in per.items():
                if value is None:
                    continue
                history = {m.step: m.value for m in client.get_metric_history(record["run_id"],
                                                                              f"matrix/{metric}/{modality}")}
                assert history[ev["after_stage"] * STEPS] == pytest.approx(value, rel=1e-12)
    artifacts = {a.path for a in client.list_artifacts(record["run_id"], "matrix")}
    assert {"matrix/pretext_loss.md", "matrix/matrix.json"} <= artifacts
    table = (Path(client.download_artifacts(record["run_id"], "matrix/pretext_loss.md", str(tmp_path)))
             .read_text())
    assert "| pretext_loss: after stage | synth_a | synth_b |" in table and table.count("\n") == 4
    # the run's config, flattened into parameters
    assert run.data.params["trainer.max_steps"] == str(STEPS)
    assert run.data.params["run.strategy"] == "rehearsal"


def test_off_unless_switched_on_or_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    import medkit_plugin_mlflow as plugin

    for k in ("MEDKIT_MLFLOW", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(k, raising=False)
    assert not plugin.enabled()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert plugin.enabled()
    monkeypatch.setenv("MEDKIT_MLFLOW", "0")
    assert not plugin.enabled()


def test_only_rank_zero_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.api import RunInfo, StageInfo

    import medkit_plugin_mlflow as plugin

    monkeypatch.setenv("MEDKIT_MLFLOW", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = RunInfo(run_dir=tmp_path / "r", config={"trainer": {"max_steps": 2}, "run": {}}, stages=[["a"]])
    stage = StageInfo(index=0, modalities=["a"], max_steps=2)
    monkeypatch.setenv("RANK", "1")
    plugin.medkit_on_run_start(run=run)
    plugin.medkit_on_step_end(run=run, stage=stage, step=1, metrics={"loss": 1.0}, modality="a")
    plugin.medkit_on_run_end(run=run, results={"matrix": {}})
    assert not (tmp_path / "r").exists()
