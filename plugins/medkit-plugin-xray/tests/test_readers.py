"""X-ray readers: PNG/JPEG/TIFF/DICOM known answers, view filter, side tables and errors."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medkit.api import ConfigError, DataError
from medkit.testing import IMAGENET_MEAN, IMAGENET_STD, create
from medkit_plugin_xray.modality import is_frontal
from medkit_plugin_xray.demo import write_dicom
from medkit_plugin_xray.readers import probe, read_grey


def _xray(**kw):
    kw.setdefault("max_upsample", None)  # tiny synthetic images; the limit itself: test_upsample.py
    return create("modality", "xray", **kw)


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


# -- raster known answers ---------------------------------------------------------------------
def test_8bit_png_and_jpeg_are_divided_by_255(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", np.full((40, 30), 51, np.uint8))
    Image.fromarray(np.full((40, 30), 128, np.uint8)).save(tmp_path / "b.jpg", quality=95)
    ds = _xray(input_size=32).dataset(tmp_path, train=False)
    assert ds.ids == ["a.png", "b.jpg"] and ds.labels is None
    a, b = ds.load(0)["input"], ds.load(1)["input"]
    assert a.shape == (3, 32, 32)
    assert torch.allclose(a, torch.full_like(a, 0.2), atol=1e-6)
    assert torch.allclose(b, torch.full_like(b, 128 / 255), atol=2 / 255)


def test_colour_and_rgba_pngs_become_grey_luma(tmp_path: Path) -> None:
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    _png(tmp_path / "red.png", red)
    rgba = np.dstack([red, np.full((16, 16), 128, np.uint8)])
    _png(tmp_path / "rgba.png", rgba)
    ds = _xray(input_size=16).dataset(tmp_path, train=False)
    for i in range(2):
        x = ds.load(i)["input"]
        assert torch.allclose(x, torch.full_like(x, 76 / 255), atol=1e-6)  # ITU-R 601 luma of red


def test_16bit_png_percentile_and_dtype_scaling(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 4000, 64), (64, 1)).astype(np.uint16)
    _png(tmp_path / "ramp16.png", ramp)
    assert Image.open(tmp_path / "ramp16.png").mode.startswith("I")
    grey = read_grey(tmp_path / "ramp16.png", "raster")  # auto: percentile 0.5–99.5
    assert grey.dtype == np.float32 and grey.min() == 0.0 and grey.max() == 1.0
    raw = read_grey(tmp_path / "ramp16.png", "raster", intensity="dtype")
    assert math.isclose(float(raw.max()), 4000 / 65535, rel_tol=1e-6)


def test_tiff_single_page_reads_and_multi_page_is_not_2d(tmp_path: Path) -> None:
    page = Image.fromarray(np.full((20, 20), 255, np.uint8))
    page.save(tmp_path / "one.tif")
    assert float(read_grey(tmp_path / "one.tif", "raster").min()) == 1.0
    page.save(tmp_path / "stack.tif", save_all=True, append_images=[page, page])
    with pytest.raises(DataError, match=r"stack\.tif.*expected a 2D image"):
        _xray().dataset(tmp_path, train=False)
    ds = _xray(on_error="skip").dataset(tmp_path, train=False)
    assert ds.ids == ["one.tif"] and ds.skipped[0][0] == "stack.tif"


# -- DICOM ------------------------------------------------------------------------------------
def test_pydicom_ct_small_is_refused_as_xray_unless_accepted(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("CT_small.dcm"))
    with pytest.raises(DataError, match=r"CT_small\.dcm.*Modality CT.*modality\.xray\.check_modality=false"):
        probe(src, "dicom")
    header = probe(src, "dicom", check_modality=False)
    assert (header.width, header.height, header.view) == (128, 128, None)
    (tmp_path / "ct.dcm").write_bytes(src.read_bytes())
    with pytest.raises(DataError, match="--modality ct"):
        _xray().dataset(tmp_path, train=False)
    x = _xray(check_modality=False).dataset(tmp_path, train=False).load(0)["input"]
    assert x.shape == (3, 224, 224)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # percentile-clipped, no window in the file


def test_dicom_rescale_then_window_known_answer(tmp_path: Path) -> None:
    stored = np.array([[0, 1000], [2000, 3000]], np.uint16)
    # values = 2 * stored - 1000 = [-1000, 1000, 3000, 5000]; window 3000 ± 2000 → [1000, 5000]
    path = write_dicom(tmp_path / "w.dcm", stored, slope=2.0, intercept=-1000.0, window=(3000.0, 4000.0))
    # DICOM LINEAR windowing (PS3.3 C.11.2.1.2, applied by pydicom) centres on c - 0.5 over w - 1
    assert np.allclose(read_grey(path, "dicom"), [[0.0, 0.0], [0.5, 1.0]], atol=1e-3)
    # without using the window (minmax over the rescaled values) the slope/intercept cancel out
    assert np.allclose(read_grey(path, "dicom", intensity="minmax"), [[0.0, 1 / 3], [2 / 3, 1.0]])
    assert np.allclose(read_grey(path, "dicom", intensity="dtype"), stored / 4095.0)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.array([[0, 1000], [2000, 4000]], np.uint16)
    mono1 = write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1")
    mono2 = write_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2")
    expected = np.array([[0.0, 0.25], [0.5, 1.0]])
    assert np.allclose(read_grey(mono2, "dicom", intensity="minmax"), expected)
    assert np.allclose(read_grey(mono1, "dicom", intensity="minmax"), 1.0 - expected)


def test_view_position_filter_from_dicom(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 4096, (32, 32)).astype(np.uint16)
    write_dicom(tmp_path / "pa.dcm", img, view="PA")
    write_dicom(tmp_path / "lat.dcm", img, view="LL")
    write_dicom(tmp_path / "noview.dcm", img, view=None)
    ds = _xray(input_size=32).dataset(tmp_path, train=False)
    assert ds.ids == ["noview.dcm", "pa.dcm"]  # unknown view is kept
    assert ds.filtered == [("lat.dcm", "view 'LL' is not frontal (frontal_only=True)")]
    assert _xray(input_size=32, frontal_only=False).dataset(tmp_path, train=False).ids == \
        ["lat.dcm", "noview.dcm", "pa.dcm"]


@pytest.mark.parametrize("header,key", [("path,ViewPosition", "{rel}"), ("dicom_id,view", "{stem}")])
def test_view_filter_from_metadata_csv(tmp_path: Path, header: str, key: str) -> None:
    for name in ("a", "b", "c"):
        _png(tmp_path / "imgs" / f"{name}.png", np.full((8, 8), 100, np.uint8))
    views = {"a": "PA", "b": "LATERAL", "c": "AP AXIAL"}
    rows = [header] + [f"{key.format(rel=f'imgs/{n}.png', stem=n)},{v}" for n, v in views.items()]
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    ds = _xray(input_size=16).dataset(tmp_path, train=False)
    assert ds.ids == ["imgs/a.png", "imgs/c.png"] and ds.filtered[0][0] == "imgs/b.png"


def test_is_frontal() -> None:
    assert is_frontal("PA") and is_frontal("ap") and is_frontal("AP AXIAL") and is_frontal("PA LLD")
    assert is_frontal("LL") is False and is_frontal("LATERAL") is False
    assert is_frontal("XTABLE LATERAL") is False and is_frontal("LAO") is False
    assert is_frontal("") is None and is_frontal(None) is None


def test_multi_frame_dicom_is_not_a_2d_image(tmp_path: Path) -> None:
    write_dicom(tmp_path / "volume.dcm", np.zeros((3, 8, 8), np.uint16), frames=3)
    with pytest.raises(DataError, match=r"volume\.dcm.*expected a 2D image.*multi-frame"):
        _xray().dataset(tmp_path, train=False)


def test_nifti_volume_is_not_a_2d_image(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(tmp_path / "vol.nii.gz"))
    with pytest.raises(DataError, match=r"vol\.nii\.gz.*expected a 2D image"):
        _xray().dataset(tmp_path, train=False)


# -- errors -----------------------------------------------------------------------------------
def test_corrupt_file_raises_or_is_skipped_with_a_logged_reason(tmp_path: Path, caplog) -> None:
    _png(tmp_path / "good.png", np.full((8, 8), 10, np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG this is not an image" * 4)
    (tmp_path / "bad.dcm").write_bytes(b"garbage" * 50)
    with pytest.raises(DataError, match=r"bad\.dcm|bad\.png"):
        _xray().dataset(tmp_path, train=False)
    with caplog.at_level(logging.WARNING):
        ds = _xray(on_error="skip").dataset(tmp_path, train=False)
    assert ds.ids == ["good.png"]
    assert [f for f, _ in ds.skipped] == ["bad.dcm", "bad.png"]
    assert "bad.png" in caplog.text


def test_truncated_png_fails_at_load_or_at_indexing_with_verify(tmp_path: Path) -> None:
    _png(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "full.png").write_bytes(data[: len(data) // 2])
    ds = _xray().dataset(tmp_path, train=False)  # header only: indexing succeeds
    with pytest.raises(DataError, match=r"full\.png"):
        ds.load(0)
    with pytest.raises(DataError, match=r"full\.png"):
        _xray(verify=True).dataset(tmp_path, train=False)


def test_empty_and_imageless_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        _xray().dataset(tmp_path, train=False)
    (tmp_path / "README.txt").write_text("no images here")
    with pytest.raises(DataError, match="empty of"):
        _xray().dataset(tmp_path, train=False)
    with pytest.raises(DataError, match="does not exist"):
        _xray().dataset(tmp_path / "missing", train=False)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="normalize"):
        _xray(normalize="minmax")
    with pytest.raises(ConfigError, match="crop_scale"):
        _xray(crop_scale=[0.5, 0.2])
    with pytest.raises(ConfigError, match="on_error"):
        _xray(on_error="ignore")


# -- labels and normalisation -----------------------------------------------------------------
def test_labels_csv_by_id_and_folder_labels(tmp_path: Path) -> None:
    for rel in ("cats/a.png", "dogs/b.png", "dogs/c.png"):
        _png(tmp_path / rel, np.full((8, 8), 10, np.uint8))
    ds = _xray(input_size=16, folder_labels=True).dataset(tmp_path, train=False)
    assert ds.class_names == ["cats", "dogs"] and ds.labels == [0, 1, 1]
    (tmp_path / "labels.csv").write_text("id,label\na,1\nc,0\n")
    ds = _xray(input_size=16, folder_labels=True).dataset(tmp_path, train=False)
    assert ds.class_names == ["0", "1"] and ds.labels == [1, -1, 0]
    assert ds.load(0)["label"] == 1


def test_normalisation_options(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", np.full((8, 8), 51, np.uint8))
    x = _xray(input_size=16, normalize="imagenet").dataset(tmp_path, train=False).load(0)["input"]
    for c in range(3):
        assert torch.allclose(x[c], torch.full_like(x[c], (0.2 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]), atol=1e-5)
    _png(tmp_path / "a.png", np.random.default_rng(1).integers(0, 255, (32, 32)).astype(np.uint8))
    z = _xray(input_size=16, normalize="zscore").dataset(tmp_path, train=False).load(0)["input"]
    assert torch.allclose(z.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(1, 2)), torch.ones(3), atol=1e-4)


# -- augmentation -----------------------------------------------------------------------------
def test_flip_and_crop_are_seeded(tmp_path: Path) -> None:
    left_bright = np.zeros((64, 64), np.uint8)
    left_bright[:, :32] = 255
    _png(tmp_path / "half.png", left_bright)
    ds = _xray(input_size=32, crop_scale=[0.99, 1.0]).dataset(tmp_path, train=True)
    sides = set()
    for seed in range(12):
        x = ds.load(0, seed=seed)["input"][0]
        assert torch.equal(x, ds.load(0, seed=seed)["input"][0])
        sides.add(bool(x[:, :8].mean() > x[:, -8:].mean()))
    assert sides == {True, False}  # some seeds flip, some do not
    no_flip = _xray(input_size=32, crop_scale=[0.99, 1.0], hflip=False).dataset(tmp_path, train=True)
    assert all(no_flip.load(0, seed=s)["input"][0][:, :8].mean() > 0.5 for s in range(12))
