"""Images and volumes upsampled far beyond their own resolution are skipped with a reason naming the
file (and DICOM series), its size, the factor and ``modality.<name>.max_upsample``; counts agree."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medkit.api.errors import ConfigError
from medkit.registry import create

from ..conftest import run_cli

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")


def _png(path: Path, side: int) -> Path:
    Image.fromarray((np.random.default_rng(side).random((side, side)) * 255).astype(np.uint8)).save(path)
    return path


def _nifti(path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Path:
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 100
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), path)
    return path


def _smartscore(dest: Path) -> Path:
    """pydicom's real test CT series "SmartScore - Gated 0.5 sec": 5 slices of 16×16 pixels."""
    from pydicom.data import get_testdata_file

    first = get_testdata_file("dicomdirtests/98892001/CT5N/2062", download=False)
    if first is None:
        pytest.skip("pydicom's DICOMDIR test files are not available offline")
    shutil.copytree(Path(first).parent, dest)
    return dest


def test_a_thumbnail_xray_is_skipped_naming_file_size_factor_and_setting(tmp_path: Path, caplog) -> None:
    from medkit_plugin_xray.demo import write_dicom

    _png(tmp_path / "full.png", 256)
    _png(tmp_path / "thumb.png", 32)
    write_dicom(tmp_path / "tiny.dcm", (np.arange(40 * 40).reshape(40, 40) * 2).astype(np.uint16))
    ds = pydicom.dcmread(tmp_path / "tiny.dcm")
    ds.SeriesDescription = "Chest PA thumbnail"
    ds.save_as(tmp_path / "tiny.dcm")
    with caplog.at_level(logging.WARNING):
        data = create("modality", "xray").dataset(tmp_path, train=False)  # on_error=raise: still a skip
    assert data.ids == ["full.png"]
    reasons = dict(data.skipped)
    assert sorted(reasons) == ["thumb.png", "tiny.dcm"]
    assert "thumb.png: its 32×32 pixels resized to 224×224 (input_size): upsampled 7.0×" in reasons["thumb.png"]
    assert "modality.xray.max_upsample=4" in reasons["thumb.png"] and "max_upsample=7" in reasons["thumb.png"]
    assert 'tiny.dcm, series "Chest PA thumbnail": its 40×40 pixels' in reasons["tiny.dcm"]
    assert "5.6×" in reasons["tiny.dcm"]
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 2  # one line per skip
    assert len(create("modality", "xray", max_upsample=8).dataset(tmp_path, train=False)) == 3
    assert len(create("modality", "xray", max_upsample=None).dataset(tmp_path, train=False)) == 3
    assert len(create("modality", "xray", input_size=96).dataset(tmp_path, train=False)) == 3  # 3×
    with pytest.raises(ConfigError, match="max_upsample must be a number >= 1 or null"):
        create("modality", "xray", max_upsample=0.5)


def test_a_16_pixel_ct_series_and_a_12_mm_slab_are_skipped_a_5_mm_ct_is_kept(tmp_path: Path, caplog) -> None:
    from medkit_plugin_ct.modality import CTModality
    from medkit_plugin_mri.modality import MRIModality

    data = tmp_path / "ct"
    _smartscore(data / "CT5N")
    _nifti(data / "thick5mm.nii.gz", (64, 64, 12), (0.8, 0.8, 5.0))  # 5× along z, 3× in-plane: kept
    _nifti(data / "slab12mm.nii.gz", (256, 256, 6), (0.8, 0.8, 12.0))  # 12× along z
    _nifti(data / "one_slice.nii.gz", (256, 256, 1), (0.8, 0.8, 20.0))  # a lone slice: in-plane only
    with caplog.at_level(logging.INFO):
        ds = CTModality().dataset(data, train=False)
    assert [v.id for v in ds.volumes] == ["one_slice.nii.gz", "thick5mm.nii.gz"]
    reasons = dict(ds.skipped)
    assert sorted(reasons) == ["CT5N", "slab12mm.nii.gz"]
    series = reasons["CT5N"]
    assert 'series "SmartScore - Gated 0.5 sec"' in series and "CT5N" in series
    assert "16×16 voxels in-plane resized to 192×192" in series and "upsampled 12.0×" in series
    assert "modality.ct.max_upsample=10" in series
    assert "6 slices 12 mm apart to 72 at 1 mm: upsampled 12.0×" in reasons["slab12mm.nii.gz"]
    start = [r.getMessage() for r in caplog.records if "windows from" in r.getMessage()]
    assert start and start[-1].endswith("(2 skipped while indexing)")  # the run's start agrees with the list
    # MRI keeps the native slices (spacing null): the slab is not upsampled along z there
    mri = MRIModality(check_modality=False).dataset(data, train=False)
    assert sorted(v.id for v in mri.volumes) == ["one_slice.nii.gz", "slab12mm.nii.gz", "thick5mm.nii.gz"]
    assert len(CTModality(max_upsample=None).dataset(data, train=False).volumes) == 4


def test_data_inspect_lists_every_upsampled_skip_in_its_count(tmp_path: Path) -> None:
    data = tmp_path / "xray"
    data.mkdir()
    _png(data / "a.png", 256)
    _png(data / "b.png", 128)
    _png(data / "thumb.png", 28)
    (data / "broken.png").write_bytes(b"\x89PNG not an image" * 4)
    out = run_cli("data", "inspect", "--modality", "xray", "--data", str(data))
    assert out.returncode == 0, out.stdout + out.stderr
    count = re.search(r"^skipped: (\d+)$", out.stdout, re.M)
    assert count, out.stdout
    lines = out.stdout.splitlines()
    listed = [ln for ln in lines[lines.index(count.group(0)) + 1:] if ln.startswith("  ")]
    assert int(count.group(1)) == len(listed) == 2, out.stdout
    assert any(ln.startswith("  thumb.png:") and "upsampled 8.0×" in ln for ln in listed)
    assert "samples: 2" in out.stdout
