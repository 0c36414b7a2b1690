"""3D segmentation resampled to ``task.spacing``: a thick-sliced volume is kept with a warning
naming it and ``task.max_upsample``, and skipped (with its mask) once the limit is set."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest

from medkit_plugin_segmentation.readers import SegReaderOptions, read_segmentation


def _case(root: Path, i: int, z_mm: float) -> None:
    import nibabel as nib

    img = np.random.default_rng(i).normal(size=(16, 16, 4)).astype(np.float32)
    seg = np.zeros((16, 16, 4), dtype=np.uint8)
    seg[4:8, 4:8, 1:3] = 1
    affine = np.diag([2.0, 2.0, z_mm, 1.0])
    for folder, arr in (("images", img), ("masks", seg)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"c{i}.nii.gz").write_bytes(gzip.compress(nib.Nifti1Image(arr, affine).to_bytes()))


def test_thick_slices_are_kept_with_a_warning_and_skipped_under_the_limit(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    for i in range(8):
        _case(tmp_path, i, 24.0 if i == 3 else 4.0)  # 24 mm slices at 2 mm: 12×, beyond pre-training's 10
    with caplog.at_level(logging.WARNING):
        splits = read_segmentation(tmp_path, SegReaderOptions(dims=3, spacing=(2.0, 2.0, 2.0)))
    assert sum(len(s) for s in splits.values()) == 8
    (msg,) = [r.getMessage() for r in caplog.records if "upsampled" in r.getMessage()]
    assert f"{tmp_path / 'images' / 'c3.nii.gz'} (12.0×)" in msg and "task.max_upsample=10" in msg
    limited = read_segmentation(tmp_path, SegReaderOptions(dims=3, spacing=(2.0, 2.0, 2.0), max_upsample=10))
    ids = [str(it.id) for s in limited.values() for it in s.items]
    assert len(ids) == 7 and not any("c3" in i for i in ids)
    assert [w for w, _ in limited["train"].skipped] == [str(tmp_path / "images" / "c3.nii.gz")]
