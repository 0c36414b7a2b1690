"""The mri readers on real files: pydicom's and nibabel's test data, DICOM series, bad inputs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medkit.api import DataError
from medkit_plugin_mri.modality import MRIModality

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not bundled with this pydicom")
    return Path(path)


def test_mr_small_single_slice_file() -> None:
    ds = MRIModality().dataset(_testdata("MR_small.dcm"), train=False)
    assert ds.ids == ["MR_small.dcm#w0"]  # one slice, padded to one 16-slice window
    x = ds.load(0)["input"]
    assert x.shape == (1, 16, 192, 192)
    assert float(x[0, 7].std()) > 0.5  # the real slice is in the middle (7 padding slices before)
    assert float(x[0, 0].std()) < 1e-6  # a constant padding slice


def test_ct_small_single_slice_file() -> None:
    ds = MRIModality(check_modality=False).dataset(_testdata("CT_small.dcm"), train=False)  # a CT, accepted
    assert len(ds) == 1 and ds.load(0)["input"].shape == (1, 16, 192, 192)


def test_dicom_series_folder(tmp_path: Path) -> None:
    src = pydicom.dcmread(_testdata("MR_small.dcm"))
    base = src.pixel_array.astype(np.int16)
    series = tmp_path / "subject" / "t1"
    series.mkdir(parents=True)
    for k in reversed(range(20)):  # written in reverse; InstanceNumber and position give the order
        ds = src.copy()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-83.9063, -91.2, 6.6406 + 1.2 * k]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.PixelData = (base + 30 * k).astype(np.int16).tobytes()
        ds.save_as(series / f"IM{19 - k:04d}.dcm")
    ds = MRIModality(drop_fraction=0.0, normalize="volume").dataset(tmp_path, train=False)
    assert ds.ids == ["subject/t1#w0"]  # 20 native slices -> one window (starts 0; 8+16 > 20)
    means = ds.volume(0)[0].mean(dim=(1, 2))
    assert ds.volume(0).shape == (1, 20, 192, 192)
    assert bool((means[1:] > means[:-1]).all())


def test_nibabel_anatomical() -> None:
    ds = MRIModality().dataset(NIB_DATA / "anatomical.nii", train=False)
    assert len(ds) == 1  # 25 slices, 2 dropped at each end -> 21 -> one window
    assert ds.load(0)["input"].shape == (1, 16, 192, 192)


def test_nibabel_4d_uses_first_frame(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        ds = MRIModality(drop_fraction=0.0).dataset(NIB_DATA / "example4d.nii.gz", train=False)
    assert "first frame" in caplog.text
    assert len(ds) == 2  # 24 slices -> starts 0 and 8
    assert ds.load(1)["input"].shape == (1, 16, 192, 192)


def test_4d_nifti_reads_frame_zero(tmp_path: Path) -> None:
    data = np.stack([np.full((6, 6, 16), 5.0), np.full((6, 6, 16), 100.0)], axis=-1)
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), tmp_path / "t.nii.gz")
    vol = MRIModality(max_upsample=None, drop_fraction=0.0, normalize="window").dataset(tmp_path, train=False).volume(0)
    assert torch.allclose(vol, torch.full_like(vol, 5.0))


def test_unreadable_file_raises_or_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "garbage.nii.gz").write_bytes(bytes(range(256)) * 4)
    shutil.copy(NIB_DATA / "anatomical.nii", tmp_path / "ok.nii")
    with pytest.raises(DataError, match="garbage.nii.gz"):
        MRIModality(max_upsample=None).dataset(tmp_path, train=False)
    ds = MRIModality(max_upsample=None, on_error="skip").dataset(tmp_path, train=False)
    assert [f for f, _ in ds.skipped] == ["garbage.nii.gz"]
    assert ds.ids == ["ok.nii#w0"]


def test_2d_png_is_not_a_volume(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "slice.png")
    with pytest.raises(DataError, match=r"slice\.png.*expected a 3D volume"):
        MRIModality().dataset(tmp_path, train=False)
    shutil.copy(NIB_DATA / "anatomical.nii", tmp_path / "ok.nii")
    ds = MRIModality(on_error="skip").dataset(tmp_path, train=False)
    assert ds.skipped[0][0] == "slice.png" and "expected a 3D volume" in ds.skipped[0][1]
