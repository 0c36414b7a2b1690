"""X-ray DICOMs with a linear VOI window are reduced before the window, and match windowing at full resolution."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medkit.data.dicom import clear_cache, decode
from medkit_plugin_xray.demo import write_dicom
from medkit_plugin_xray.dicom_window import linear_window
from medkit_plugin_xray.readers import read_grey, reduce_grey

#: Largest |difference| (values in [0, 1]) between the reduced-first path and windowing every
#: full-resolution pixel then box-averaging: float32 rounding only, the window's clipping is exact.
TOL = 2e-5
#: Real files shipped with pydicom that carry pixels and a linear window (its CR examples,
#: ``chrJapMulti.dcm`` and co., hold no pixel data): an MR slice (64², window 600/1600), a CT slice in
#: JPEG 2000 with RescaleIntercept -1024 and a narrow window (40/100: most pixels are clipped), and
#: one with three windows (the first one applies).
REAL = {"MR_small.dcm": 16, "693_J2KI.dcm": 128, "J2K_pixelrep_mismatch.dcm": 128}


def _full_resolution(path: Path, min_side: int) -> np.ndarray:
    """The path before this change: pydicom's Modality LUT and VOI on every pixel (float64), then the box average."""
    px = decode(path)
    assert px.voi is not None
    out = reduce_grey(px.voi, min_side)
    return 1.0 - out if px.monochrome1 else out


def _radiograph(n: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    img = 1800 + 900 * np.exp(-((x - .4) ** 2 + (y - .5) ** 2) / .03) + 400 * np.sin(40 * y)
    return np.clip(img + rng.normal(0, 150, img.shape), 0, 4095).astype(np.uint16)


def _check(path: Path, min_side: int, shape: tuple[int, int]) -> None:
    clear_cache()
    assert linear_window(pydicom.dcmread(path, stop_before_pixels=True)) is not None, "takes the reduced path"
    got = read_grey(path, "dicom", min_side=min_side)
    want = _full_resolution(path, min_side)
    assert got.shape == want.shape == shape and got.dtype == np.float32
    assert float(np.abs(got - want).max()) <= TOL
    assert 0.0 < float(got.mean()) < 1.0


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_match_the_full_resolution_window(name: str, tmp_path: Path) -> None:
    from medkit.data.dicom_codecs import missing_decoder_of

    src = pydicom.data.get_testdata_file(name)
    assert src, f"pydicom's test file {name} is missing"
    if missing_decoder_of(src):
        pytest.skip(f"{name}: no pixel-data decoder installed ({missing_decoder_of(src)})")
    path = Path(shutil.copy(src, tmp_path / name))
    side = REAL[name]
    rows = int(pydicom.dcmread(path, stop_before_pixels=True).Rows)
    _check(path, side, (rows // (rows // side),) * 2)  # reduced by 4


def test_a_generated_2048_radiograph_matches_the_full_resolution_window(tmp_path: Path) -> None:
    """2048² 12-bit with a window whose edges cut through the image (so clipping matters)."""
    path = write_dicom(tmp_path / "big.dcm", _radiograph(2048), window=(2100.0, 900.0))
    _check(path, 501, (512, 512))


@pytest.mark.parametrize("function, slope, intercept", [("LINEAR_EXACT", None, None), ("LINEAR", 2.0, -1000.0),
                                                        ("LINEAR_EXACT", 0.5, 10.0)])
def test_window_functions_and_rescale_fold_into_the_bounds(tmp_path: Path, function: str, slope: float | None,
                                                          intercept: float | None) -> None:
    window = (2100.0, 900.0) if slope is None else (2100.0 * slope + intercept, 900.0 * slope)
    path = write_dicom(tmp_path / "w.dcm", _radiograph(256), window=window, slope=slope, intercept=intercept,
                       photometric="MONOCHROME1")
    ds = pydicom.dcmread(path)
    ds.VOILUTFunction = function
    ds.save_as(path)
    _check(path, 64, (64, 64))


def test_non_linear_vois_keep_the_full_resolution_path(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "s.dcm", _radiograph(128), window=(2100.0, 900.0))
    ds = pydicom.dcmread(path)
    ds.VOILUTFunction = "SIGMOID"
    assert linear_window(ds) is None
    ds.VOILUTFunction = "LINEAR"
    ds.WindowWidth = 1  # a hard threshold
    assert linear_window(ds) is None
    ds.WindowWidth, ds.RescaleSlope, ds.RescaleIntercept = 900, -1, 0
    assert linear_window(ds) is None
    ds.VOILUTFunction = "SIGMOID"
    ds.RescaleSlope = 1
    ds.save_as(path)
    clear_cache()
    assert np.abs(read_grey(path, "dicom", min_side=32) - _full_resolution(path, 32)).max() <= 1e-6
