"""Read-time checks of scans (issue 20): library warnings named with their file, entries that are not
files listed with their reason, NIfTI geometry read as stored."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from medkit.api.errors import DataError


def test_a_library_warning_is_logged_once_with_its_file(caplog: pytest.LogCaptureFixture) -> None:
    import nibabel
    from medkit.data.checks import attribute_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            warnings.warn_explicit("pixdim[1,2,3] should be non-zero", UserWarning, nibabel.__file__, 1)
        warnings.warn_explicit("an internal deprecation", DeprecationWarning, nibabel.__file__, 2)
    caplog.set_level(logging.DEBUG, logger="medkit.data.checks")
    attribute_warnings("scans/a.nii", caught)
    shown = [r for r in caplog.records if "pixdim" in r.getMessage()]
    assert len(shown) == 1 and shown[0].levelno == logging.WARNING
    assert shown[0].getMessage() == "scans/a.nii: pixdim[1,2,3] should be non-zero"
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "deprecation" in r.getMessage())


def test_the_walker_lists_fifos_and_dangling_links_with_their_reason(tmp_path: Path) -> None:
    from medkit.data.walk import walk

    (tmp_path / "a.png").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink(tmp_path / "missing.png", tmp_path / "gone.png")
    os.mkfifo(tmp_path / ".hidden.png")
    skipped: list[tuple[str, str]] = []
    _, files = walk(tmp_path, (".png",), skipped=skipped)
    assert [f.name for f in files] == ["a.png"]
    assert dict(skipped).keys() == {"pipe.png", "gone.png"}
    assert "FIFO" in dict(skipped)["pipe.png"] and "dangling" in dict(skipped)["gone.png"]


@pytest.mark.parametrize("pixdim", [[1.0, 1.0, -2.0], [0.0, 1.0, 1.0], [1.0, np.inf, 1.0]])
def test_a_bad_voxel_size_is_refused_as_stored_also_by_the_finetuning_reader(tmp_path: Path, pixdim: list) -> None:
    nib = pytest.importorskip("nibabel")
    from medkit.data.readers import read_volume

    path = tmp_path / "v.nii"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())
    with open(path, "rb") as fh:
        header = nib.Nifti1Header.from_fileobj(fh, check=False)
    header["pixdim"][1:4] = pixdim
    raw[:348] = header.binaryblock
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"{path}: voxel size \(pixdim\)"):
        read_volume(path)


def test_a_dicom_without_pixel_spacing_is_refused_naming_it(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from medkit.data.volumes import find_volumes
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelSpacing
    ds.save_as(tmp_path / "one.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match=r"one\.dcm: no PixelSpacing in the DICOM header"):
        find_volumes(tmp_path, "RAS")
