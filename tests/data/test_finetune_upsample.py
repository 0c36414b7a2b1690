"""How far the fine-tuning readers stretch a file, from its header: ``input_size`` and ``spacing``."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest

from medkit.data.finetune_upsample import finetune_upsampling, native_grid, screen_upsampled


def _nifti(path: Path, shape: tuple[int, int, int], zooms: tuple[float, float, float], flip: bool = False) -> Path:
    import nibabel as nib

    affine = np.diag([-zooms[0] if flip else zooms[0], -zooms[1] if flip else zooms[1], zooms[2], 1.0])
    path.write_bytes(gzip.compress(nib.Nifti1Image(np.zeros(shape, dtype=np.float32), affine).to_bytes()))
    return path


def test_the_factor_of_a_volume_is_its_resampling_then_its_resize(tmp_path: Path) -> None:
    thick = _nifti(tmp_path / "thick.nii.gz", (16, 20, 4), (1.0, 0.5, 5.0))
    assert native_grid(thick) == ((4, 16, 20), (5.0, 1.0, 0.5))  # [Z, X, Y], as read_array returns it
    assert finetune_upsampling(thick, input_size=None, spacing=None)[0] == 1.0
    assert finetune_upsampling(thick, input_size=None, spacing=[1.0, 1.0, 1.0])[0] == pytest.approx(5.0)
    assert finetune_upsampling(thick, input_size=None, spacing=[0.5, 0.5, 0.5])[0] == pytest.approx(10.0)
    assert finetune_upsampling(thick, input_size=[8, 64, 20], spacing=[1.0, 1.0, 1.0])[0] == pytest.approx(4.0)
    lps = _nifti(tmp_path / "lps.nii.gz", (16, 20, 4), (1.0, 0.5, 5.0), flip=True)
    assert native_grid(lps) == native_grid(thick)


def test_screening_warns_once_by_default_and_skips_only_under_a_limit(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    files = [_nifti(tmp_path / f"v{i}.nii.gz", (16, 16, 4), (1.0, 1.0, z)) for i, z in enumerate((1.0, 12.0, 3.0))]
    skipped: list[tuple[str, str]] = []
    with caplog.at_level(logging.WARNING):
        kept = screen_upsampled(files, Path, owner="task t", dims=3, input_size=None, spacing=[1.0, 1.0, 1.0],
                                limit=None, skipped=skipped)
    assert kept == files and not skipped
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "1 of 3" in msg and f"{files[1]} (12.0×)" in msg and "task.max_upsample=10" in msg
    kept = screen_upsampled(files, Path, owner="task t", dims=3, input_size=None, spacing=[1.0, 1.0, 1.0],
                            limit=2.5, skipped=skipped)
    assert kept == [files[0]] and [w for w, _ in skipped] == [str(files[1]), str(files[2])]
    assert "upsampled 3.0×" in skipped[1][1] and "task.max_upsample=2.5" in skipped[1][1]
    assert screen_upsampled(files, Path, owner="t", dims=3, input_size=None, spacing=None, limit=1.0,
                            skipped=[]) == files, "nothing resized, nothing read or skipped"
