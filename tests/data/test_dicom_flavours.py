"""Known answers for DICOM flavours on pydicom's own test files: enhanced multi-frame rescale and
placement, compressed transfer syntaxes, and the message naming a missing decoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medkit.api.errors import DataError
from medkit.data import dicom
from medkit.data.volumes import find_volumes, load_volume

pydicom = pytest.importorskip("pydicom")
FIXTURES = Path(__file__).parent / "fixtures"


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available offline")
    return Path(path)


def _hide_decoders(monkeypatch: pytest.MonkeyPatch, tsuid: str, needs: tuple[str, ...]) -> None:
    """Make pydicom behave as on an install without a decoder for ``tsuid``."""
    from pydicom.pixels import get_decoder

    decoder = get_decoder(tsuid)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": needs, "gdcm": ("gdcm>=3.0.10",)})


def _enhanced_ct_checks(path: Path, tmp_path: Path) -> None:
    shutil.copy(path, tmp_path / "ect.dcm")
    (vol,), skipped = find_volumes(tmp_path, "LPS")
    assert not skipped and vol.kind == "dicom"
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.float64)
    arr = load_volume(vol, "LPS").numpy()
    # the functional groups' intercept (-1024) is applied: air is -1024 HU, not 0
    assert arr.min() == stored.min() - 1024 == -1024
    assert arr.max() == stored.max() - 1024
    # so under the CT plugin's default window (-1024, 1024) nothing saturates white
    assert (arr >= 1024).mean() == 0.0
    # placed by the per-frame PlanePositionSequence: the affine's origin is frame 1's position
    affine = np.array(vol.affine).reshape(4, 4)
    first = [float(v) for v in ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient]
    assert np.allclose(affine[:3, 3], [-first[0], -first[1], first[2]])  # LPS -> RAS
    assert np.isclose(np.linalg.norm(affine[:3, 2]), 10.0)  # frames 10 mm apart
    assert vol.slices == 2 and np.isclose(vol.spacing, 10.0)


def test_enhanced_ct_functional_group_rescale_and_positions(tmp_path: Path) -> None:
    _enhanced_ct_checks(FIXTURES / "eCT_Supplemental_small.dcm", tmp_path)


def test_enhanced_ct_full_file_when_available(tmp_path: Path) -> None:
    _enhanced_ct_checks(_testdata("eCT_Supplemental.dcm"), tmp_path)


def test_jpeg_lossless_decodes_to_pydicoms_pixels() -> None:
    path = FIXTURES / "JPEG-LL.dcm"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    px = dicom.decode(path)
    assert px.values.shape == (1024, 256)
    assert np.array_equal(px.values, ds.pixel_array.astype(np.float64))
    assert px.values.std() > 0  # a real image, not a constant


def test_jpeg2000_lossless_matches_the_uncompressed_file() -> None:
    lossless = dicom.decode(_testdata("MR_small_jp2klossless.dcm")).values
    plain = dicom.decode(_testdata("MR_small.dcm")).values
    assert np.array_equal(lossless, plain)


def test_j2k_cr_matches_uncompressed(tmp_path: Path) -> None:
    """A real CR (pydicom's DICOMDIR test set; each pixel repeated 4×4, as OpenJPEG's encoder refuses
    16×16) written uncompressed and as JPEG 2000 lossless reads identically."""
    pytest.importorskip("openjpeg")
    ds = pydicom.dcmread(_testdata("dicomdirtests/77654033/CR1/6154"))
    assert ds.Modality == "CR"
    big = np.kron(ds.pixel_array, np.ones((4, 4), ds.pixel_array.dtype))
    ds.set_pixel_data(big, ds.PhotometricInterpretation, int(ds.BitsStored))
    ds.save_as(tmp_path / "cr.dcm")
    ds.compress(pydicom.uid.JPEG2000Lossless)
    ds.save_as(tmp_path / "cr_j2k.dcm")
    j2k = dicom.decode(tmp_path / "cr_j2k.dcm").values
    assert j2k.shape == (64, 64) and j2k.std() > 0
    assert np.array_equal(j2k, dicom.decode(tmp_path / "cr.dcm").values)


def test_rg1_j2kr_matches_rg1_uncr_when_available() -> None:
    assert np.array_equal(dicom.decode(_testdata("RG1_J2KR.dcm")).values,
                          dicom.decode(_testdata("RG1_UNCR.dcm")).values)


def test_missing_decoder_is_named_for_a_2d_image(monkeypatch: pytest.MonkeyPatch) -> None:
    dicom.clear_cache()
    _hide_decoders(monkeypatch, pydicom.uid.JPEGLosslessSV1, ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.0"))
    with pytest.raises(DataError) as err:
        dicom.decode(FIXTURES / "JPEG-LL.dcm")
    text = str(err.value)
    assert "JPEG-LL.dcm" in text and "pylibjpeg-libjpeg" in text and "medkit[dicom]" in text
    assert "python-gdcm" in text


def test_missing_decoder_is_named_when_indexing_a_volume(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("openjpeg")
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    ds.compress(pydicom.uid.JPEG2000Lossless)
    ds.save_as(tmp_path / "ct_j2k.dcm")
    (vol,), _ = find_volumes(tmp_path, "RAS")
    plain = pydicom.dcmread(_testdata("CT_small.dcm"))
    expected = plain.pixel_array.astype(np.float64) * float(plain.RescaleSlope) + float(plain.RescaleIntercept)
    got = load_volume(vol, "LPS").numpy()
    assert np.isclose(got.min(), expected.min()) and np.isclose(got.max(), expected.max())
    _hide_decoders(monkeypatch, pydicom.uid.JPEG2000Lossless, ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0"))
    with pytest.raises(DataError) as err:
        find_volumes(tmp_path, "RAS")
    assert "ct_j2k.dcm" in str(err.value) and "pylibjpeg-openjpeg" in str(err.value)
    assert "expected a 3D volume" not in str(err.value)
    shutil.copy(FIXTURES / "eCT_Supplemental_small.dcm", tmp_path / "ect.dcm")
    found, skipped = find_volumes(tmp_path, "RAS", on_error="skip")
    assert [v.id for v in found] == ["ect.dcm"]
    assert [s[0] for s in skipped] == ["ct_j2k.dcm"] and "pylibjpeg-openjpeg" in skipped[0][1]


def test_xray_indexing_skips_an_undecodable_file_naming_the_decoder(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    from medkit.registry import create

    shutil.copy(FIXTURES / "JPEG-LL.dcm", tmp_path / "ll.dcm")
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(tmp_path / "ok.png")
    _hide_decoders(monkeypatch, pydicom.uid.JPEGLosslessSV1, ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.0"))
    ds = create("modality", "xray", input_size=32, check_modality=False, on_error="skip").dataset(tmp_path, train=False)
    assert ds.ids == ["ok.png"] and len(ds.skipped) == 1
    file, why = ds.skipped[0]
    assert file == "ll.dcm" and "pylibjpeg-libjpeg" in why and "JPEG Lossless" in why
