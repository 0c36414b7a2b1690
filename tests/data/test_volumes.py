"""Volume indexing as archives hold DICOM (many series per folder) and read-time data checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from medkit.api.errors import DataError
from medkit.data.volumes import find_volumes, load_volume

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not bundled with this pydicom")
    return Path(path)


def write_series(folder: Path, source: str, n: int, *, step: float = 2.0, gaps: list[float] | None = None,
                 patient: str = "P1", prefix: str = "IM", seed: int = 0) -> str:
    """``n`` slices of pydicom's ``source`` file as one new series (new UIDs, positions ``step`` mm
    apart, or the cumulative ``gaps``), written under shuffled names into ``folder``; the series UID."""
    src = pydicom.dcmread(_testdata(source))
    folder.mkdir(parents=True, exist_ok=True)
    series, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    z = np.cumsum([0.0] + (gaps if gaps is not None else [step] * (n - 1)))
    names = np.random.default_rng(seed).permutation(n)
    for k in range(n):
        ds = src.copy()
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.PatientID = series, study, patient
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(z[k])]
        ds.save_as(folder / f"{prefix}{int(names[k]):04d}", enforce_file_format=True)
    return series


def test_a_folder_of_three_mixed_series_yields_three_volumes(tmp_path: Path) -> None:
    a = write_series(tmp_path / "dump", "CT_small.dcm", 5, patient="P1", prefix="A")
    b = write_series(tmp_path / "dump", "CT_small.dcm", 4, step=3.0, patient="P1", prefix="B", seed=1)
    c = write_series(tmp_path / "dump", "MR_small.dcm", 6, step=1.5, patient="P2", prefix="C", seed=2)
    volumes, skipped = find_volumes(tmp_path, "RAS")
    assert skipped == []
    assert sorted(v.id for v in volumes) == sorted(f"dump/{u}" for u in (a, b, c))
    by = {v.series: v for v in volumes}
    assert (by[a].slices, by[b].slices, by[c].slices) == (5, 4, 6)
    assert by[a].spacing == pytest.approx(2.0) and by[c].spacing == pytest.approx(1.5)
    assert (by[a].patient, by[c].patient) == ("P1", "P2") and by[a].study != by[b].study
    assert {Path(p).name[0] for p in by[b].paths} == {"B"}
    x = load_volume(by[c], "RAS")
    assert tuple(x.shape) == (64, 64, 6)


def test_one_series_in_a_folder_keeps_the_folder_as_id(tmp_path: Path) -> None:
    write_series(tmp_path / "s1", "CT_small.dcm", 3)
    volumes, _ = find_volumes(tmp_path, "RAS")
    assert [v.id for v in volumes] == ["s1"]


def test_uneven_slice_spacing_names_the_series_or_is_skipped(tmp_path: Path) -> None:
    bad = write_series(tmp_path / "dump", "CT_small.dcm", 5, gaps=[2.0, 2.0, 6.0, 2.0], prefix="U")
    good = write_series(tmp_path / "dump", "CT_small.dcm", 4, prefix="G", seed=3)
    with pytest.raises(DataError, match=rf"dump \(series 5 files from U\d+, UID {bad}\): uneven slice spacing: the gap after slice 3"):
        find_volumes(tmp_path, "RAS")
    volumes, skipped = find_volumes(tmp_path, "RAS", on_error="skip")
    assert [v.series for v in volumes] == [good] and len(skipped) == 1 and bad in skipped[0][1]
    # rounding in positions (≤ 10 % of the gap) is accepted
    write_series(tmp_path / "ok", "CT_small.dcm", 4, gaps=[2.0, 2.05, 1.95])
    assert find_volumes(tmp_path / "ok", "RAS")[0][0].slices == 4


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def test_nonfinite_complex_tiny_and_truncated_volumes_name_the_file(tmp_path: Path) -> None:
    vol = np.zeros((8, 8, 8), np.float32)
    vol[1, 2, 3], vol[4, 4, 4] = np.nan, np.inf
    nan = _nifti(tmp_path / "nan.nii", vol)
    with pytest.raises(DataError, match=r"nan\.nii: non-finite voxels: 1 NaN and 1 Inf of 512"):
        load_volume(find_volumes(nan, "RAS")[0][0], "RAS")
    cplx = _nifti(tmp_path / "c.nii", np.ones((8, 8, 8), np.complex64))
    with pytest.raises(DataError, match=r"c\.nii: holds complex values"):
        find_volumes(cplx, "RAS")
    tiny = _nifti(tmp_path / "tiny.nii", np.ones((1, 1, 1), np.float32))
    with pytest.raises(DataError, match=r"tiny\.nii: the volume is 1×1×1 pixels"):
        find_volumes(tiny, "RAS")
    good = _nifti(tmp_path / "g.nii.gz", np.ones((16, 16, 16), np.float32))
    blob = good.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(gzip.decompress(blob)[:600]))
    cut = find_volumes(tmp_path / "cut.nii.gz", "RAS")[0][0]  # the header is intact
    with pytest.raises(DataError, match=r"cut\.nii\.gz: cannot read its pixel data"):
        load_volume(cut, "RAS")


def test_on_error_skip_survives_a_truncated_volume_at_read_time(tmp_path: Path, caplog) -> None:
    from medkit_plugin_ct.modality import CTModality

    for name in ("a", "b"):
        _nifti(tmp_path / f"{name}.nii", np.ones((16, 16, 16), np.float32))
    blob = (tmp_path / "b.nii").read_bytes()
    (tmp_path / "b.nii").write_bytes(blob[:1000])  # header intact, pixels cut
    strict = CTModality(input_size=(16, 16, 16)).dataset(tmp_path, train=False)
    with pytest.raises(DataError, match=r"b\.nii: cannot read its pixel data"):
        [strict.load(i) for i in range(len(strict))]
    ds = CTModality(input_size=(16, 16, 16), on_error="skip").dataset(tmp_path, train=False)
    samples = [ds.load(i) for i in range(len(ds))]
    assert all(s["id"].startswith("a.nii#") for s in samples)
    assert [f for f, _ in ds.skipped] == ["b.nii"] and "skipping b.nii" in caplog.text
