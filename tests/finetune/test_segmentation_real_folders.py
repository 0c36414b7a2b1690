"""Fine-tuning segmentation on a real-style folder: ``imagesTr/labelsTr`` without ``dataset.json``,
volumes of different sizes (a default patch is chosen), label values recorded in the run's notes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

#: (x, y, z) as stored, read as (z, x, y) after reorientation to RAS; no two round up to the same
#: multiple of 16, so whole images cannot be batched together
SIZES = [(40, 36, 20), (70, 44, 24), (36, 40, 36), (44, 60, 22), (52, 48, 40)]


def _volumes(root: Path) -> dict[int, int]:
    """nnU-Net-named volumes of different sizes with labels 0/1/2; the voxel count of each label."""
    import nibabel as nib

    counts: dict[int, int] = {}
    for i, size in enumerate(SIZES):
        img = np.random.default_rng(i).normal(size=size).astype(np.float32)
        seg = np.zeros(size, np.uint8)
        seg[5:15, 5:15, 4:10] = 1
        seg[8:10, 8:10 + i, 5:7] = 2
        for folder, name, arr in (("imagesTr", f"case_{i:03d}_0000.nii.gz", img),
                                  ("labelsTr", f"case_{i:03d}.nii.gz", seg)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / name).write_bytes(gzip.compress(nib.Nifti1Image(arr, np.eye(4)).to_bytes()))
        for v, n in zip(*np.unique(seg, return_counts=True)):
            counts[int(v)] = counts.get(int(v), 0) + int(n)
    return counts


@pytest.mark.parametrize("dataset_json", [False, True], ids=["folders-only", "nnunet-dataset-json"])
def test_finetune_on_volumes_of_different_sizes(tmp_path: Path, dataset_json: bool) -> None:
    """Without dataset.json the folder was "empty for segmentation"; with it, the volumes' different
    sizes failed at the first batch with "set task.patch_size"."""
    from medkit.finetune.config import FinetuneSelection, compose_finetune
    from medkit.finetune.trainer import Finetuner
    from medkit.registry import get_host

    counts = _volumes(tmp_path / "data")
    if dataset_json:
        (tmp_path / "data" / "dataset.json").write_text(json.dumps(
            {"labels": {"background": 0, "liver": 1, "tumour": 2}, "file_ending": ".nii.gz"}))
    sel = FinetuneSelection(task="segmentation", modality="ct", data=str(tmp_path / "data"), scratch=True,
                            preset="tiny", max_steps=2,
                            overrides=["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3",
                                       "trainer.batch_size=2", "trainer.val_every=2"])
    results = Finetuner(compose_finetune(sel, host=get_host()), tmp_path / "run", components=get_host()).run()
    assert results["steps"] == 2 and isinstance(results["test"]["dice"], float)
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())["notes"]["data"]
    assert data["patch_size"] == [16, 32, 32]  # patch_3d's 16x192x192 clipped to the smallest 20x36x36
    assert data["labels"]["voxels"] == {str(v): n for v, n in counts.items()}
    assert data["labels"]["smallest_shape"] == [20, 36, 36]
    assert results["class_names"] == (["background", "liver", "tumour"] if dataset_json
                                      else ["background", "class1", "class2"])
