"""After ``--from``, an earlier modality whose data are not here is marked "not evaluated" (n/a with
the reason), never evaluated on the demo data; the files it writes count stages from 1."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

SMALL = ["trainer.batch_size=4", "trainer.eval_batches=1", "trainer.probe_linear_steps=10"]
ENCODER = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3"]


def _medkit(*args: str) -> Any:
    from medkit.cli.main import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_from_without_the_earlier_data_marks_it_not_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path / "demo-first"))
    first = tmp_path / "ct"
    _medkit("run", "--modality", "ct", "--strategy", "sequential", "--preset", "tiny", "--max-steps", "2",
            "--run-dir", str(first), *ENCODER, *SMALL)
    shutil.move(tmp_path / "demo-first", tmp_path / "gone")  # the data ct was trained on are not here any more
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path / "demo-second"))
    second = tmp_path / "mri"
    _medkit("run", "--from", str(first), "--modality", "mri", "--strategy", "sequential", "--preset", "tiny",
            "--max-steps", "2", "--run-dir", str(second), *SMALL)
    text = (second / "metrics" / "eval.json").read_text()
    records = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in eval.json"))
    assert [r["after_stage"] for r in records] == [1, 2]
    first_ct = json.loads((first / "metrics" / "eval.json").read_text())[0]["metrics"]["pretext_loss"]["ct"]
    assert records[0]["metrics"]["pretext_loss"]["ct"] == first_ct, "stage 1 is the earlier run's own number"
    assert "ct" not in records[1]["metrics"]["pretext_loss"], "never evaluated on the demo phantoms"
    assert "--data ct=DIR" in records[1]["unavailable"]["pretext_loss"]["ct"]
    rows = (second / "metrics" / "matrix.csv").read_text().splitlines()
    assert rows[0] == "after_stage,stage_modalities,ct,mri" and rows[2].startswith("2,mri,n/a,")
    result = _medkit("report", str(second))
    assert "n/a (could not be evaluated, see report.md): ct" in result.output
    md = (second / "report" / "report.md").read_text()
    assert "- n/a ct, after stage 2: trained in " in md
    keep = os.environ.get("MEDKIT_PICTURES")
    if keep:
        for png in (second / "report").glob("*.png"):
            shutil.copy(png, Path(keep) / f"from_{png.name}")
