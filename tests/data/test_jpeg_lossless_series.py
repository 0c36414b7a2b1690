"""A JPEG-Lossless DICOM *series* read through the CT plugin's series reader: the decoded values
(known answer: pydicom's own decode), the shape and spacing, and the decoder named when it is missing.

pydicom ships no JPEG-Lossless series, so the series is pydicom's real ``JPEG-LL.dcm`` (vendored in
``fixtures/``, see its README) copied four times with the slice geometry a series has (positions
2.5 mm apart, instance numbers); the encoded pixel data are the original's, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medkit.api.errors import DataError
from medkit.data import dicom
from medkit.data.volumes import load_volume

pydicom = pytest.importorskip("pydicom")
FIXTURES = Path(__file__).parent / "fixtures"
SLICES, GAP = 4, 2.5


def _series(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for k in range(SLICES):
        ds = pydicom.dcmread(FIXTURES / "JPEG-LL.dcm")
        ds.SeriesDescription = "JPEG-LL copies"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, k * GAP]
        ds.SliceThickness = GAP
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{k + 1}"
        ds.save_as(folder / f"s{SLICES - k}.dcm")  # file names in reverse: InstanceNumber orders them
    return folder


def _hide_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom as on an install without a JPEG Lossless decoder (no pylibjpeg-libjpeg, no gdcm)."""
    from pydicom.pixels import get_decoder

    decoder = get_decoder(pydicom.uid.JPEGLosslessSV1)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.0"),
                                                  "gdcm": ("gdcm>=3.0.10",)})


def test_a_jpeg_lossless_series_reads_as_pydicom_decodes_it(tmp_path: Path) -> None:
    from medkit_plugin_ct.modality import CTModality

    folder = _series(tmp_path / "ct" / "NM1")
    ds = CTModality(check_modality=False).dataset(tmp_path / "ct", train=False)  # Modality NM, accepted
    (vol,) = ds.volumes
    assert vol.kind == "series" and vol.id == "NM1" and vol.description == "JPEG-LL copies"
    assert vol.slices == SLICES and np.isclose(vol.spacing, GAP)
    assert vol.shape == (256, 1024, SLICES)  # columns, rows, slices
    assert [Path(p).name for p in vol.paths] == [f"s{SLICES - k}.dcm" for k in range(SLICES)]
    expected = pydicom.dcmread(FIXTURES / "JPEG-LL.dcm").pixel_array.astype(np.float32)  # [rows, columns]
    assert pydicom.dcmread(folder / "s1.dcm").file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    got = load_volume(vol, "LPS").numpy()  # the DICOM patient axes: [columns, rows, slices]
    assert got.shape == (256, 1024, SLICES)
    for k in range(SLICES):
        assert np.array_equal(got[:, :, k].T, expected), k
    assert expected.min() == 0 and expected.max() == 278  # pydicom's decode of the file
    assert ds.load(0)["input"].shape == (1, 16, 192, 192)  # 4 slices × 2.5 mm → 10 at 1 mm, padded


def test_a_missing_jpeg_lossless_decoder_is_named_for_the_series(tmp_path: Path, monkeypatch) -> None:
    from medkit_plugin_ct.modality import CTModality

    _series(tmp_path / "ct" / "NM1")
    dicom.clear_cache()
    _hide_decoders(monkeypatch)
    with pytest.raises(DataError) as err:
        CTModality(check_modality=False).dataset(tmp_path / "ct", train=False)
    text = str(err.value)
    assert "NM1" in text and ".dcm" in text and "JPEG Lossless" in text
    assert "pylibjpeg-libjpeg" in text and "python-gdcm" in text and "medkit[dicom]" in text
    assert "expected a 3D volume" not in text  # the fix is a decoder, not a re-export
    with pytest.raises(DataError, match="every one of|no readable volume"):
        CTModality(check_modality=False, on_error="skip").dataset(tmp_path / "ct", train=False)
