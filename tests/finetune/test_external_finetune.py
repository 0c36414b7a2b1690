"""``medkit finetune --backbone NAME:PATH`` end to end on demo data (the issue's acceptance commands, with
small inputs), the Table 3 fusion with DeSD's ResUNet, and ``medkit compare`` of the runs (Table 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medkit.registry import get_host

#: Steps per run: a few, each logged with a finite loss (the point is that it finishes and trains).
STEPS = 3
#: One validation and one checkpoint per run, few evaluation samples: the point is that it finishes.
QUICK = ["trainer.batch_size=2", f"trainer.val_every={STEPS}", f"trainer.checkpoint_every={STEPS}",
         "trainer.max_eval_samples=4"]
TINY = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3"]
#: (id, backbone, task, modality, extra overrides): the acceptance command and its 2D / pathology kin.
CASES = [
    ("desd-ct", "desd", "classification", "ct", ["task.input_size=[16,64,64]"]),
    ("pcrlv2-3d-ct", "pcrlv2-3d", "classification", "ct", []),
    ("pcrlv2-2d-xray", "pcrlv2-2d", "classification", "xray", []),
    ("path-dino-pathology", "path-dino", "classification", "pathology", []),
    ("unimiss-xray", "unimiss", "classification", "xray", ["task.input_size=[64,64]"]),
    ("unimiss-ct-seg", "unimiss", "segmentation", "ct", ["task.patch_size=[16,64,64]"]),
]


def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from medkit.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(releases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case of :data:`CASES` fine-tuned for :data:`STEPS` steps (once per module)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("external-ft")
    out: dict[str, Any] = {}
    try:
        for case, name, task, modality, extra in CASES:
            if modality not in get_host().names("modality"):
                out[case] = None
                continue
            run = root / case
            res = _cli("finetune", "--task", task, "--modality", modality, "--backbone", f"{name}:{releases[name]}",
                       "--preset", "tiny", "--max-steps", str(STEPS), "--run-dir", str(run), *QUICK, *extra)
            out[case] = (res, run)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_finetune_with_a_released_backbone_finishes_on_demo_data(case: str, runs: dict[str, Any],
                                                                 releases: dict[str, Path]) -> None:
    if runs[case] is None:
        pytest.skip(f"the modality of {case} is not installed")
    res, run = runs[case]
    name, task = next((c[1], c[2]) for c in CASES if c[0] == case)
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    keys = ("acc", "auc", "f1") if task == "classification" else ("dice", "hd95")
    assert metrics["steps"] == STEPS and all(isinstance(metrics["test"][k], float) for k in keys)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["finished"] and manifest["backbone"] == f"{name}:{releases[name].resolve()}"
    assert manifest["backbone_weights"]["coverage"] == 1.0 and manifest["backbone_weights"]["family"] == name
    steps = [json.loads(ln) for ln in (run / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == STEPS and all(s["loss"] == s["loss"] for s in steps)  # finite, trained


@pytest.mark.slow
def test_evaluate_rebuilds_a_released_backbone_run_without_the_checkpoint(runs: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    """The run's weights are its own: evaluation needs no access to the released file."""
    res, run = runs["pcrlv2-2d-xray"]
    assert res.exit_code == 0, res.output
    out = _cli("evaluate", str(run))
    assert out.exit_code == 0, out.output
    assert json.loads((run / "metrics.json").read_text())["test"]["acc"] == pytest.approx(
        json.loads((run / "metrics" / "evaluate-test.json").read_text())["metrics"]["acc"])


@pytest.mark.slow
def test_compare_tabulates_backbones_by_dataset_with_the_supplements_cross(runs: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    done = [v[1] for v in runs.values() if v is not None and v[0].exit_code == 0]
    assert len(done) >= 4
    out = tmp_path / "table2.md"
    res = _cli("compare", *map(str, done), "--out", str(out))
    assert res.exit_code == 0, res.output
    table = res.output.splitlines()
    header = table[0].split()
    assert header[0] == "backbone" and "classification:ct" in header and "ACC" in header
    row = {ln.split()[0]: ln for ln in table[2:] if ln.strip()}
    assert "DeSD" in row and "Path_DINO" in row
    desd = row["DeSD"].split()
    assert desd.count("×") >= 3  # no 2D dataset: ACC, AUC, F1 of each 2D column are ×
    assert "×" not in row["UniMiSS"]  # 2D and 3D
    text = out.read_text()
    assert text.startswith("| backbone |") and "× : the backbone cannot take" in text
    res = _cli("compare", str(done[0]), str(tmp_path))
    assert res.exit_code != 0


@pytest.mark.slow
def test_fusion_trains_desd_resunet_beside_the_frozen_vit(releases: dict[str, Path], tmp_path: Path) -> None:
    """Supplement D / Fig. 2: ``task.fusion=desd:PATH`` — the ViT is frozen, the ResUNet (its encoder from
    DeSD's release) learns."""
    import torch

    from medkit.finetune.config import FinetuneSelection, compose_finetune
    from medkit.finetune.trainer import FinetuneSession

    over = [*TINY, *QUICK, f"task.fusion=desd:{releases['desd']}", "task.patch_size=[16,64,64]",
            "task.fusion_channels=8"]
    res = _cli("finetune", "--task", "segmentation", "--modality", "ct", "--scratch", "--preset", "tiny",
               "--max-steps", "3", "--run-dir", str(tmp_path / "fusion"), *over)
    assert res.exit_code == 0, res.output
    cfg = compose_finetune(FinetuneSelection(task="segmentation", modality="ct", scratch=True, preset="tiny",
                                             overrides=over), host=get_host())
    s = FinetuneSession(cfg, tmp_path / "fusion", pretrained=True, components=get_host())
    model = s.model
    assert type(model).__name__ == "FusionSegmentationModel" and type(model.cnn).__name__ == "ResUNet"
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.cnn.parameters())
    from medkit.finetune.external import build_external

    desd = build_external(f"desd:{releases['desd']}", 3, components=get_host()).weights_module().state_dict()
    own = model.cnn.encoder.state_dict()
    assert all(torch.equal(own[k], desd[k]) for k in desd)  # the released encoder, not random init
    from medkit.storage.files import load_tensors

    after = load_tensors(tmp_path / "fusion" / "model.safetensors")
    vit = {k: v for k, v in after.items() if k.startswith("backbone.")}
    fresh = model.state_dict()  # this session's model is the run's initial one (same seed)
    assert vit and all(torch.equal(vit[k], fresh[k]) for k in vit)  # the frozen ViT did not move
    moved = [k for k in after if k.startswith("cnn.encoder.") and k.endswith("conv1.weight")]
    assert moved and all(not torch.equal(after[k], own[k[len("cnn.encoder."):]]) for k in moved)  # it learned
