"""Continue pre-training from a published model and from a local run directory (real plugins)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
SMALL = ["trainer.batch_size=4", "trainer.eval_batches=1", "trainer.probe_linear_steps=10"]
ENCODER = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3"]


def _medkit(*args: str) -> Any:
    from medkit.cli.main import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _steps(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics" / "steps.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_push_then_continue_from_the_hub(hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path / "demo"))
    first = tmp_path / "ct"
    _medkit("run", "--modality", "ct", "--strategy", "rehearsal", "--preset", "tiny", "--max-steps", "2",
            "--run-dir", str(first), *ENCODER, *SMALL)
    _medkit("push", str(first), "--repo-id", "alice/medkit-ct")
    assert not any(f.startswith("strategy/") for f in hub.files("alice/medkit-ct")), "no buffer data pushed"
    caplog.set_level("INFO")
    second = tmp_path / "mri"
    _medkit("run", "--from", "hf-hub:alice/medkit-ct", "--modality", "mri", "--strategy", "rehearsal",
            "--preset", "tiny", "--max-steps", "5", "--run-dir", str(second), *SMALL)
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["stages_done"] == [["ct"], ["mri"]]
    assert manifest["stages"][0]["source"] == "hf-hub:alice/medkit-ct"
    assert manifest["from"]["ref"] == "hf-hub:alice/medkit-ct"
    assert "ships no strategy state" in caplog.text, "the missing buffers are said, not silently ignored"
    header = (second / "metrics" / "matrix.csv").read_text().splitlines()[0]
    assert header == "after_stage,stage_modalities,ct,mri"


@pytest.mark.slow
def test_continue_a_local_run_with_its_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path / "demo"))
    buffer = ["strategy.buffer_ratio=0.5", "strategy.num_center=0.1"]
    first = tmp_path / "ct"
    _medkit("run", "--modality", "ct", "--strategy", "rehearsal", "--preset", "tiny", "--max-steps", "2",
            "--run-dir", str(first), *ENCODER, *SMALL, *buffer)
    kept = json.loads((first / "strategy" / "state.json").read_text())
    assert "ct" in json.dumps(kept)
    caplog.set_level("INFO")
    second = tmp_path / "path"
    _medkit("run", "--from", str(first), "--modality", "pathology", "--strategy", "rehearsal",
            "--max-steps", "12", "--run-dir", str(second), *SMALL, *buffer)
    assert "restored the rehearsal state" in caplog.text
    assert "newly initialised (not in that model): encoder.tokenizers.patch_2d, heads.pathology" in caplog.text
    assert "fresh:" not in caplog.text
    steps = _steps(second)
    replayed = [s for s in steps if s["role"] == "buffer"]
    assert replayed and {s["modality"] for s in replayed} == {"ct"}, "earlier stages' buffers are rehearsed"
    assert all("distill" in s for s in replayed)
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["stages_done"] == [["ct"], ["pathology"]]
