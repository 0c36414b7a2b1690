"""Fine-tuning on the folder a --from run pre-trained on keeps pre-training's held-out sources held
out: validation/test sources the encoder trained on are refused (or accepted on request)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pytest

QUICK = ("trainer.val_every=1", "trainer.checkpoint_every=1", "trainer.batch_size=2", "trainer.max_eval_samples=4")


@pytest.fixture
def pretrained_on_folder(medkit: Any, tmp_path: Path) -> tuple[Path, Path]:
    """(labelled image folder, a tiny xray pre-training run on that very folder)."""
    from medkit_plugin_classification.demo import write_demo

    data = write_demo(tmp_path / "cls", 2)
    run = tmp_path / "pre"
    res = medkit("run", "--modality", "xray", "--strategy", "sequential", "--preset", "tiny", "--max-steps", "2",
                 "--data", f"xray={data}", "--run-dir", str(run), "trainer.probe_linear_steps=0",
                 "trainer.probe_knn_k=0",
                 "modality.xray.max_upsample=null")  # the classification demo's images are 32 px
    assert res.exit_code == 0, res.output
    return data, run


def _finetune(medkit: Any, run: Path, data: Path, out: Path, *extra: str) -> Any:
    return medkit("finetune", "--task", "classification", "--modality", "xray", "--from", str(run),
                  "--data", str(data), "--max-steps", "1", "--run-dir", str(out), *QUICK, *extra)


def test_val_and_test_sources_the_encoder_trained_on_are_refused(medkit: Any, pretrained_on_folder: tuple[Path, Path],
                                                                 tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data, run = pretrained_on_folder
    res = _finetune(medkit, run, data, tmp_path / "ft")
    assert res.exit_code == 1
    error = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and "split.json" in error[0] and "trainer.allow_pretraining_overlap=true" in error[0]
    assert not (tmp_path / "ft" / "metrics").exists()  # refused before any training
    with caplog.at_level(logging.WARNING, logger="medkit.finetune.leakage"):
        res = _finetune(medkit, run, data, tmp_path / "ft2", "trainer.allow_pretraining_overlap=true")
    assert res.exit_code == 0, res.output
    assert any("accepted: trainer.allow_pretraining_overlap=true" in r.getMessage() for r in caplog.records)


def test_the_pretraining_split_reused_is_accepted(medkit: Any, pretrained_on_folder: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    from medkit.finetune.leakage import check_pretraining_overlap

    data, run = pretrained_on_folder
    split = json.loads((run / "metrics" / "split.json").read_text())["modalities"]["xray"]
    held = sorted(split["val"])
    assert len(held) >= 2
    table = data / "labels.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for s in split["train"]:
            w.writerow([s, s.split("/")[0], "train"])
        for i, s in enumerate(held):
            w.writerow([s, s.split("/")[0], "val" if i % 2 == 0 else "test"])
    res = _finetune(medkit, run, table, tmp_path / "ft")
    assert res.exit_code == 0, res.output
    from medkit.registry import get_host

    task = get_host().create("task", "classification", dims=2, modality="xray")
    result = check_pretraining_overlap(run, table, task.splits(table, seed=0))
    assert result is not None and result["checked"] and result["overlap"] == {}


def test_sources_named_differently_are_reported_unchecked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from medkit.finetune.leakage import check_pretraining_overlap

    data = tmp_path / "d"
    data.mkdir()
    (tmp_path / "run" / "metrics").mkdir(parents=True)
    (tmp_path / "run" / "metrics" / "split.json").write_text(json.dumps(
        {"modalities": {"xray": {"data": str(data), "train": ["patient-1"], "val": ["patient-2"]}}}))
    splits = {"train": SimpleNamespace(ids=["a.png"], sources=None), "test": SimpleNamespace(ids=["b.png"], sources=None)}
    with caplog.at_level(logging.WARNING, logger="medkit.finetune.leakage"):
        result = check_pretraining_overlap(tmp_path / "run", data, splits)
    assert result is not None and result["checked"] is False
    assert any("cannot check" in r.getMessage() for r in caplog.records)
    assert check_pretraining_overlap(tmp_path / "run", tmp_path, splits) is None  # another folder: no split of it
