"""DICOM files that do not belong are refused or skipped with a reason naming the file and series."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from medkit.api.errors import DataError
from medkit.data.dicom_checks import check_dicom_modality
from medkit.data.volumes import find_volumes

pydicom = pytest.importorskip("pydicom")


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available offline")
    return Path(path)


def _smartscore(dest: Path) -> Path:
    """pydicom's DICOMDIR test CT series "SmartScore - Gated 0.5 sec" (5 slices) copied to ``dest``."""
    src = _testdata("dicomdirtests/98892001/CT5N/2062").parent
    shutil.copytree(src, dest)
    return dest


def test_a_ct_series_given_as_mri_is_refused_with_the_option_to_accept(tmp_path: Path) -> None:
    from medkit_plugin_mri.modality import MRIModality

    _smartscore(tmp_path / "data" / "CT5N")
    with pytest.raises(DataError) as err:
        MRIModality().dataset(tmp_path / "data", train=True)
    text = str(err.value)
    assert "CT5N" in text and "Modality CT" in text and '"SmartScore - Gated 0.5 sec"' in text
    assert "modality.mri.check_modality=false" in text and "--modality ct" in text
    accepted = MRIModality(check_modality=False, max_upsample=None).dataset(tmp_path / "data", train=True)
    assert len(accepted) >= 1
    # the CT modality reads it without a word
    from medkit_plugin_ct.modality import CTModality

    assert len(CTModality(max_upsample=None).dataset(tmp_path / "data", train=True)) >= 1  # 16² test slices


def test_skipped_series_name_the_folder_first_file_and_description(tmp_path: Path) -> None:
    _smartscore(tmp_path / "CT5N")
    mr = _testdata("dicomdirtests/98892003/MR1/4919").parent  # three one-slice localizers
    shutil.copytree(mr, tmp_path / "MR1")
    found, skipped = find_volumes(tmp_path, "RAS", on_error="skip", modality="mri")
    assert [v.id for v in found] == ["MR1/15820", "MR1/4919", "MR1/5641"]
    (what, why), = skipped
    assert what == "CT5N" and "2062" in why and '"SmartScore - Gated 0.5 sec"' in why and "Modality CT" in why


def test_unknown_or_missing_modality_codes_are_not_refused() -> None:
    ds = pydicom.Dataset()
    for code in ("", "OT"):
        ds.Modality = code
        check_dicom_modality("x.dcm", ds, "mri")
    ds.Modality = "MR"
    check_dicom_modality("x.dcm", ds, "mri")
    ds.Modality = "CR"
    check_dicom_modality("x.dcm", ds, "xray")
    with pytest.raises(DataError, match=r"--modality xray, or set modality.ct.check_modality=false"):
        check_dicom_modality("x.dcm", ds, "ct")
    check_dicom_modality("x.dcm", ds, "ct", check=False)
