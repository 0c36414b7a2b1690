"""Cross-plugin end-to-end runs on the real plugins and their demo data (tiny encoder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medkit.eval.matrices import read_matrix

from .conftest import run_cli

SMALL = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
         "trainer.eval_batches=1"]


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@pytest.mark.slow
def test_five_modalities_sequential(tmp_path):
    out = run_cli("run", "--modality", "report,xray,ct,mri,pathology", "--strategy", "sequential",
                  "--preset", "tiny", "--max-steps", "2", "--run-dir", str(tmp_path / "r"), *SMALL)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "using the built-in demo data" in out.stderr
    assert _manifest(tmp_path / "r")["stages_done"] == [["report"], ["xray"], ["ct"], ["mri"], ["pathology"]]
    mods, rows = read_matrix(tmp_path / "r" / "metrics" / "matrix.csv")
    assert mods == ["report", "xray", "ct", "mri", "pathology"] and None not in rows[-1]


@pytest.mark.slow
def test_run_data_folder_of_real_files(tmp_path):
    """`--data` reads a folder users have: pydicom's and nibabel's bundled files."""
    import nibabel
    import pydicom.data

    ct = tmp_path / "ct"
    ct.mkdir()
    shutil.copy2(pydicom.data.get_testdata_file("CT_small.dcm"), ct / "CT_small.dcm")
    nib_data = Path(nibabel.__file__).parent / "tests" / "data"
    shutil.copy2(nib_data / "anatomical.nii", ct / "anatomical.nii")
    shutil.copy2(nib_data / "example4d.nii.gz", ct / "example4d.nii.gz")
    out = run_cli("run", "--modality", "ct", "--data", str(ct), "--strategy", "sequential", "--preset", "tiny",
                  "--max-steps", "2", "--run-dir", str(tmp_path / "r"), *SMALL)
    assert out.returncode == 0, out.stderr[-3000:]
    assert str(ct) in _manifest(tmp_path / "r")["data"]["ct"]
    inspect = run_cli("data", "inspect", "--modality", "ct", "--data", str(ct))
    assert inspect.returncode == 0, inspect.stderr
    assert "samples:" in inspect.stdout and "skipped: 0" in inspect.stdout


@pytest.mark.slow
def test_unreadable_file_is_one_clear_line(tmp_path):
    bad = tmp_path / "ct"
    bad.mkdir()
    (bad / "broken.nii.gz").write_bytes(b"this is not a volume")
    out = run_cli("run", "--modality", "ct", "--data", str(bad), "--preset", "tiny", "--max-steps", "1",
                  "--run-dir", str(tmp_path / "r"))
    assert out.returncode != 0
    lines = [line for line in out.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "broken.nii.gz" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    skip = run_cli("data", "inspect", "--modality", "ct", "--data", str(bad), "--on-error", "skip")
    assert "broken.nii.gz" in skip.stdout + skip.stderr


@pytest.mark.slow
def test_trained_tokenizer_round_trips_through_the_run(tmp_path):
    from medkit.registry import create

    demo = create("modality", "report").demo_data(tmp_path / "corpus")
    trained = run_cli("tokenizer", "train", "--modality", "report", "--data", str(demo), "--vocab-size", "300",
                      "--out", str(tmp_path / "tok"))
    assert trained.returncode == 0, trained.stderr
    vocab = tmp_path / "tok" / "tokenizer.json"
    assert vocab.exists()
    out = run_cli("run", "--modality", "report", "--preset", "tiny", "--max-steps", "2", "--run-dir",
                  str(tmp_path / "r"), f"tokenizer.text_1d.vocab_file={vocab}", *SMALL)
    assert out.returncode == 0, out.stderr[-2000:]
    saved = tmp_path / "r" / "tokenizers" / "text_1d" / "tokenizer.json"
    assert json.loads(saved.read_text())["model"]["vocab"] == json.loads(vocab.read_text())["model"]["vocab"]
    vocab.unlink()  # a later run must use the run's own copy
    later = run_cli("run", "--from", str(tmp_path / "r"), "--modality", "xray", "--max-steps", "1",
                    "--run-dir", str(tmp_path / "r2"), "trainer.batch_size=4", "trainer.eval_batches=1")
    assert later.returncode == 0, later.stderr[-2000:]
    again = json.loads((tmp_path / "r2" / "tokenizers" / "text_1d" / "tokenizer.json").read_text())
    assert again["model"]["vocab"] == json.loads(saved.read_text())["model"]["vocab"]
