"""2D DICOM pixels through pydicom's LUTs, MONOCHROME1, and one decode per file per process."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medkit.api.errors import DataError
from medkit.data import dicom

pydicom = pytest.importorskip("pydicom")
xray_demo = pytest.importorskip("medkit_plugin_xray.demo")


@pytest.fixture(autouse=True)
def _fresh_cache():
    dicom.clear_cache()
    yield
    dicom.clear_cache()


def _edit(path: Path, **tags) -> Path:
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)
    return path


def test_voi_lut_sequence_and_voi_lut_function_are_applied(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    stored = np.array([[0, 1], [2, 3]], np.uint16)
    path = xray_demo.write_dicom(tmp_path / "lut.dcm", stored)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]  # 4 entries for stored values 0..3, 8-bit output
    item.add_new(0x00283006, "US", [255, 0, 128, 64])  # LUTData: non-monotonic, no window could give it
    _edit(path, VOILUTSequence=pydicom.Sequence([item]))
    px = dicom.decode(path)
    assert np.allclose(px.voi, np.array([[255, 0], [128, 64]]) / 255.0)
    sig = xray_demo.write_dicom(tmp_path / "sig.dcm", stored, window=(1.5, 2.0))
    _edit(sig, VOILUTFunction="SIGMOID")
    out = dicom.decode(sig).voi
    assert 0 < out[0, 0] < out[0, 1] < 0.5 < out[1, 0] < out[1, 1] < 1  # a sigmoid, not a clipped line


def test_modality_lut_and_monochrome1(tmp_path: Path) -> None:
    from medkit_plugin_xray.readers import read_grey

    stored = np.array([[0, 1000], [2000, 3000]], np.uint16)
    path = xray_demo.write_dicom(tmp_path / "m1.dcm", stored, slope=2.0, intercept=-1000.0,
                                 photometric="MONOCHROME1")
    px = dicom.decode(path)
    assert px.values.tolist() == [[-1000.0, 1000.0], [3000.0, 5000.0]] and px.voi is None and px.monochrome1
    grey = read_grey(path, "dicom", intensity="minmax")
    assert np.allclose(grey, [[1.0, 2 / 3], [1 / 3, 0.0]])  # MONOCHROME1: inverted


def test_a_jpeg2000_dicom_decodes_once_per_run(tmp_path: Path, monkeypatch) -> None:
    from pydicom.data import get_testdata_file

    from medkit.registry import create

    src = get_testdata_file("JPEG2000.dcm", download=False)
    if src is None:
        pytest.skip("pydicom's JPEG2000.dcm is not bundled")
    try:
        pydicom.dcmread(src).pixel_array
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no JPEG 2000 decoder installed ({exc})")
    shutil.copy(src, tmp_path / "cr.dcm")
    calls: list[Path] = []
    real = dicom.decode
    counted = (lambda path, ds=None: calls.append(path) or real(path, ds))
    monkeypatch.setattr(dicom, "decode", counted)
    import medkit.api  # plugins reach decode through the public namespace, which keeps what it loaded

    monkeypatch.setattr(medkit.api, "decode_dicom", counted, raising=False)
    ds = create("modality", "xray", input_size=32, check_modality=False).dataset(tmp_path, train=True)  # an NM file
    first = ds.load(0, seed=1)["input"]
    for seed in range(2, 6):
        ds.load(0, seed=seed)
    assert len(calls) == 1
    assert ds.load(0, seed=1)["input"].equal(first)
    (tmp_path / "cr.dcm").touch()  # a changed file is decoded again, never served stale
    import os

    st = os.stat(tmp_path / "cr.dcm")
    os.utime(tmp_path / "cr.dcm", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds.load(0)
    assert len(calls) == 2


def test_bad_pixels_name_the_file(tmp_path: Path) -> None:
    path = xray_demo.write_dicom(tmp_path / "cut.dcm", np.ones((32, 32), np.uint16))
    blob = path.read_bytes()
    path.write_bytes(blob[:-1000])
    with pytest.raises(DataError, match=r"cut\.dcm: cannot"):
        dicom.decode(path)


def test_the_disk_cache_serves_a_new_process_without_decoding(tmp_path: Path) -> None:
    from medkit.data.cache import DiskCache

    path = xray_demo.write_dicom(tmp_path / "a.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8))
    disk = DiskCache(tmp_path / "cache", "xray-test")
    made: list[int] = []

    def make() -> np.ndarray:
        made.append(1)
        return dicom.decode(path).values / 63.0

    first = dicom.cached(dicom.file_key(path), make, disk, [str(path)])
    dicom.clear_cache()  # as a fresh worker process
    again = dicom.cached(dicom.file_key(path), make, disk, [str(path)])
    assert made == [1] and np.array_equal(first, again) and not again.flags.writeable


def test_modality_lut_sequence_is_applied(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    path = xray_demo.write_dicom(tmp_path / "mlut.dcm", np.array([[0, 1], [2, 3]], np.uint16))
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", [10, 40, 20, 30])  # LUTData: stored 0..3 -> these values
    _edit(path, ModalityLUTSequence=pydicom.Sequence([item]), RescaleSlope=None, RescaleIntercept=None)
    assert dicom.decode(path).values.tolist() == [[10.0, 40.0], [20.0, 30.0]]
