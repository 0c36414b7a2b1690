"""The ct readers on real files: pydicom's and nibabel's test data, DICOM series, bad inputs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medkit.api import DataError
from medkit_plugin_ct.modality import CTModality

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not bundled with this pydicom")
    return Path(path)


def _write_series(folder: Path, n: int, step: float) -> list[int]:
    """n slices of CT_small at z = z0 + k*step, slice k brighter by 50*k, written in shuffled order."""
    src = pydicom.dcmread(_testdata("CT_small.dcm"))
    base = src.pixel_array.astype(np.int16)
    folder.mkdir(parents=True)
    order = list(np.random.default_rng(0).permutation(n))
    for k in order:
        ds = src.copy()
        ds.InstanceNumber = int(k) + 1
        ds.ImagePositionPatient = [-158.135803, -179.035797, -75.7 + k * step]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.PixelData = (base + 50 * int(k)).astype(np.int16).tobytes()
        ds.save_as(folder / f"slice_{int(k) * 7 % n:03d}.dcm")
    return order


def test_ct_small_single_slice_file() -> None:
    ds = CTModality().dataset(_testdata("CT_small.dcm"), train=False)
    assert ds.ids == ["CT_small.dcm#w0"]  # 1 slice, 5 mm thick -> 5 slices at 1 mm, padded to 16
    x = ds.load(0)["input"]
    assert x.shape == (1, 16, 192, 192)
    assert (x[:, :5] == -1.0).all() and (x[:, -6:] == -1.0).all()  # air padding both ends
    middle = x[0, 8]
    assert middle.max() > 0.9 and middle.min() < -0.5  # real anatomy in HU, rescaled by MONAI


def test_mr_small_single_slice_file() -> None:
    ds = CTModality(check_modality=False).dataset(_testdata("MR_small.dcm"), train=False)  # an MR, accepted
    assert len(ds) == 1
    x = ds.load(0)["input"]
    assert x.shape == (1, 16, 192, 192) and x.std() > 0


def test_dicom_series_folder_is_one_ordered_volume(tmp_path: Path) -> None:
    _write_series(tmp_path / "patient" / "series", n=12, step=2.5)
    shutil.copy(_testdata("rtplan.dcm"), tmp_path / "patient" / "series" / "plan.dcm")  # no image: ignored
    (tmp_path / "patient" / "notes.txt").write_text("not an image")
    ds = CTModality(window=(-1024.0, 3000.0)).dataset(tmp_path, train=False)
    # 12 slices 2.5 mm apart span 30 mm -> 30 slices at 1 mm -> windows at 0 and 8
    assert ds.ids == ["patient/series#w0", "patient/series#w1"]
    vol = ds.volume(0)
    means = vol[0].mean(dim=(1, 2))
    assert vol.shape == (1, 30, 192, 192)
    assert bool((means[1:] >= means[:-1]).all()) and means[-1] - means[0] > 0.1  # sorted by position


def test_multiframe_dicom_file(tmp_path: Path) -> None:
    src = pydicom.dcmread(_testdata("CT_small.dcm"))
    frames = np.stack([src.pixel_array.astype(np.int16) + 40 * k for k in range(20)])
    src.NumberOfFrames = 20
    src.SliceThickness = 1.0
    src.SpacingBetweenSlices = 1.0
    src.PixelData = frames.tobytes()
    src.save_as(tmp_path / "multi.dcm")
    ds = CTModality(window=(-1024.0, 3000.0)).dataset(tmp_path / "multi.dcm", train=False)
    assert ds.ids == ["multi.dcm#w0"]  # 20 frames 1 mm apart -> one 16-slice window
    means = ds.volume(0)[0].mean(dim=(1, 2))
    assert ds.volume(0).shape == (1, 20, 192, 192)
    assert bool((means[1:] > means[:-1]).all())


def test_two_series_in_one_folder_are_two_volumes(tmp_path: Path) -> None:
    shutil.copy(_testdata("CT_small.dcm"), tmp_path / "a.dcm")
    shutil.copy(_testdata("MR_small.dcm"), tmp_path / "b.dcm")
    ds = CTModality(check_modality=False).dataset(tmp_path, train=False)
    assert [v.id for v in ds.volumes] == ["a.dcm", "b.dcm"]  # one single-slice series each
    skipping = CTModality(on_error="skip").dataset(tmp_path, train=False)  # the MR is refused as CT
    assert [v.id for v in skipping.volumes] == ["a.dcm"] and skipping.skipped[0][0] == "b.dcm"


def test_nibabel_anatomical() -> None:
    ds = CTModality().dataset(NIB_DATA / "anatomical.nii", train=False)
    assert len(ds) == 5  # 25 slices of 2 mm -> 50 slices at 1 mm -> starts 0, 8, 16, 24, 32
    assert ds.load(4)["input"].shape == (1, 16, 192, 192)


def test_nibabel_4d_uses_first_frame(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        ds = CTModality().dataset(NIB_DATA / "example4d.nii.gz", train=False)
    assert "first frame" in caplog.text
    assert len(ds) == 5  # 24 slices of 2.2 mm -> 53 slices at 1 mm
    assert ds.load(4)["input"].shape == (1, 16, 192, 192)


def test_4d_nifti_reads_frame_zero(tmp_path: Path) -> None:
    data = np.stack([np.full((6, 6, 16), 512.0), np.full((6, 6, 16), -512.0)], axis=-1)
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), tmp_path / "t.nii.gz")
    x = CTModality(max_upsample=None).dataset(tmp_path, train=False).load(0)["input"]
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=1e-6)


def test_unreadable_file_raises_or_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "broken.nii.gz").write_bytes(b"this is not a nifti file at all" * 10)
    shutil.copy(NIB_DATA / "anatomical.nii", tmp_path / "good.nii")
    with pytest.raises(DataError, match="broken.nii.gz"):
        CTModality(max_upsample=None).dataset(tmp_path, train=False)
    ds = CTModality(max_upsample=None, on_error="skip").dataset(tmp_path, train=False)
    assert [f for f, _ in ds.skipped] == ["broken.nii.gz"]
    assert "NIfTI" in ds.skipped[0][1]
    assert len(ds) == 5 and all(i.startswith("good.nii#") for i in ds.ids)


def test_2d_png_is_not_a_volume(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "slice.png")
    with pytest.raises(DataError, match=r"slice\.png.*expected a 3D volume"):
        CTModality().dataset(tmp_path, train=False)


def test_2d_nifti_is_not_a_volume(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((16, 16), dtype=np.float32), np.eye(4)), tmp_path / "flat.nii")
    with pytest.raises(DataError, match=r"flat\.nii.*expected a 3D volume"):
        CTModality().dataset(tmp_path, train=False)


def test_folder_without_volumes_is_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match="empty"):
        CTModality().dataset(tmp_path, train=False)


def test_indexing_reads_headers_only(tmp_path: Path) -> None:
    data = np.zeros((8, 8, 40), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "cut.nii")
    raw = (tmp_path / "cut.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[:400])  # header intact, pixel data truncated
    ds = CTModality(max_upsample=None).dataset(tmp_path, train=False)
    assert len(ds) == 4
    with pytest.raises(DataError, match="cut.nii"):
        ds.load(0)
