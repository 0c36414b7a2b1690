"""``medkit finetune`` / ``evaluate`` end to end on demo data: 1D, 2D and 3D classification, 2D and
3D segmentation, from a pre-trained run and from scratch; resume; recipes; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medkit.registry import get_host
from medkit.storage.jsonl import read_jsonl

#: A tiny encoder for --scratch runs; quick steps and validation for every run.
TINY = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3"]
QUICK = ["trainer.batch_size=4", "trainer.val_every=2", "trainer.checkpoint_every=2"]
PNG = b"\x89PNG\r\n\x1a\n"


def _check_run(run: Path, task: str) -> dict:
    for name in ("config.yaml", "manifest.json", "metrics.json", "best.safetensors", "model.safetensors",
                 "metrics/steps.jsonl", "metrics/val.jsonl"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    picture = run / ("pictures/confusion_matrix.png" if task == "classification" else "pictures/overlays.png")
    assert picture.read_bytes()[:8] == PNG
    assert metrics["pictures"] == [str(picture.relative_to(run))]
    keys = ("acc", "auc", "f1") if task == "classification" else ("dice", "hd95")
    assert all(isinstance(metrics["test"][k], float) for k in keys)
    assert metrics["best_step"] in [h["step"] for h in metrics["history"]]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["finished"] and manifest["kind"] == "finetune"
    return metrics


CASES = [("classification", "report", 5), ("classification", "xray", 3), ("classification", "ct", 2),
         ("segmentation", "xray", 2), ("segmentation", "ct", 3)]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["from", "scratch"])
@pytest.mark.parametrize("task,modality,classes", CASES, ids=[f"{t[:3]}-{m}" for t, m, _ in CASES])
def test_finetune_on_demo_data(medkit, task: str, modality: str, classes: int, source: str,
                               pretrained_run: Path, tmp_path: Path) -> None:
    from medkit.registry import get_host

    if modality == "report" and "text_1d" not in get_host().names("tokenizer"):
        pytest.skip("tokenizer text_1d (medkit-plugin-tokenizers) is not registered")
    origin = ["--from", str(pretrained_run)] if source == "from" else ["--scratch", "--preset", "tiny", *TINY]
    res = medkit("finetune", "--task", task, "--modality", modality, *origin, "--max-steps", "3",
                 "--run-dir", str(tmp_path / "ft"), *QUICK)
    assert res.exit_code == 0, res.output
    assert f"test ({task}" in res.output and ("acc=" in res.output or "dice=" in res.output)
    metrics = _check_run(tmp_path / "ft", task)
    assert [h["step"] for h in metrics["history"]] == [2, 3]
    assert len(metrics["class_names"]) == classes
    cfg = (tmp_path / "ft" / "config.yaml").read_text()
    assert ("depth: 2" in cfg) and (str(pretrained_run.resolve()) in cfg) == (source == "from")
    if modality == "report":
        assert (tmp_path / "ft" / "tokenizers" / "text_1d" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_segmentation_2d_from_pretrained_run_and_evaluate(medkit, pretrained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "seg"
    res = medkit("finetune", "--task", "segmentation", "--modality", "xray", "--from", str(pretrained_run),
                 "--max-steps", "2", "--run-dir", str(run), "task.patch_size=[16,16]", *QUICK)
    assert res.exit_code == 0, res.output
    metrics = _check_run(run, "segmentation")
    res = medkit("evaluate", str(run))
    assert res.exit_code == 0, res.output
    again = json.loads((run / "metrics" / "evaluate-test.json").read_text())
    assert again["metrics"] == pytest.approx(metrics["test"])  # same weights, same held-out split
    assert (run / "pictures" / "evaluate-test" / "overlays.png").read_bytes()[:8] == PNG


def test_resume_matches_an_uninterrupted_run(medkit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.storage.files import load_tensors
    from medkit.engine.engine import load_config
    from medkit.finetune.trainer import Finetuner
    from medkit.finetune.config import FinetuneSelection, compose_finetune
    from medkit_plugin_classification.task import ClassificationTask

    sel = FinetuneSelection(task="classification", modality="xray", scratch=True, preset="tiny", max_steps=4,
                            overrides=TINY + QUICK)
    Finetuner(compose_finetune(sel, host=get_host()), tmp_path / "a", components=get_host()).run()
    calls = {"n": 0}
    original = ClassificationTask.loss

    def crash_on_third(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "loss", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Finetuner(compose_finetune(sel, host=get_host()), tmp_path / "b", components=get_host()).run()
    monkeypatch.setattr(ClassificationTask, "loss", original)
    res = medkit("finetune", "--resume", str(tmp_path / "b"))
    assert res.exit_code == 0, res.output
    a, b = load_tensors(tmp_path / "a" / "model.safetensors"), load_tensors(tmp_path / "b" / "model.safetensors")
    assert set(a) == set(b) and all((a[k] == b[k]).all() for k in a)
    steps = [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics" / "steps.jsonl")]
    assert steps == [1, 2, 3, 4]
    assert load_config(tmp_path / "b") == load_config(tmp_path / "a")


def test_recipe_show_and_list(medkit) -> None:
    res = medkit("finetune", "--recipe", "lits", "--show")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "recipe lits" in out and "25000" in out and "Dice + BCE" in out
    assert "multilabel: true" in out and "- 192" in out and "lr: 0.0001" in out and "batch_size: 2" in out
    res = medkit("finetune", "--list-recipes")
    names = set(res.output.split())
    assert {"pubmed20k", "chestxr", "qata", "ricord", "lits", "vs", "la", "nch", "glas"} <= names


def test_one_line_errors(medkit, tmp_path: Path) -> None:
    res = medkit("finetune", "--task", "classification", "--modality", "xray")
    assert res.exit_code == 1 and "give --from RUN_DIR" in res.output
    res = medkit("finetune", "--recipe", "litz", "--show")
    assert res.exit_code == 1 and "did you mean 'lits'" in res.output
    bad = tmp_path / "pairs"
    from PIL import Image
    import numpy as np

    for i in range(3):
        (bad / "images").mkdir(parents=True, exist_ok=True)
        (bad / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(bad / "images" / f"{i}.png")
        Image.fromarray(np.zeros((32, 16 if i == 1 else 32), np.uint8)).save(bad / "masks" / f"{i}.png")
    res = medkit("finetune", "--task", "segmentation", "--modality", "xray", "--scratch", "--preset", "tiny",
                 "--data", str(bad), "--run-dir", str(tmp_path / "x"), *TINY)
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "masks/1.png: mask shape [32, 16] differs" in lines[0]
