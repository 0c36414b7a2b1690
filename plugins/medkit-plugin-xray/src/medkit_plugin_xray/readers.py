"""X-ray file readers: PNG/JPEG/TIFF through Pillow and DICOM through pydicom, to grey values in [0, 1]."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from medkit.api import DataError, check_edges, check_finite, convert_all, raster_kind, warnings_of
from medkit_plugin_xray.dicom_window import linear_window, reduce_windowed

DICOM_SUFFIXES = (".dcm", ".dicom")
INTENSITY_MODES = ("auto", "percentile", "minmax", "dtype")
#: The DICOM identifiers the split keys need (read once, while probing the header).
UID_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_FIX = "replace or remove the file, or set modality.xray.on_error=skip to skip such files"


@dataclass(frozen=True)
class Header:
    """What indexing learns about one file without decoding its pixels."""

    kind: str  # "raster" or "dicom"
    width: int
    height: int
    view: str | None  # DICOM ViewPosition, None when absent
    description: str | None = None  # DICOM SeriesDescription, None when absent
    uids: dict[str, str] | None = None  # DICOM PatientID, Study/Series/SOPInstanceUID (for the split keys)


def file_kind(path: Path) -> str | None:
    """``"raster"``, ``"dicom"``, ``"volume"`` (refused later) or ``None`` (not an image: ignored).

    Files without a suffix count as DICOM when they carry the ``DICM`` magic at byte 128.
    """
    kind = raster_kind(path)
    if kind is not None:
        return kind
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix == "":
        try:
            with open(path, "rb") as fh:
                head = fh.read(132)
        except OSError:
            return None
        if len(head) == 132 and head[128:] == b"DICM":
            return "dicom"
    return None


def not_2d(path: Path, got: str) -> DataError:
    """The error for a file that holds something other than one 2D image."""
    return DataError(f"{path}: expected a 2D image (one X-ray: PNG/JPEG/TIFF page or single-frame DICOM), "
                     f"got {got}; 3D data belong to the ct or mri modality — {_FIX}")


def probe(path: Path, kind: str, *, verify: bool = False, check_modality: bool = True) -> Header:
    """Read the header of ``path`` (and decode it fully when ``verify``); a DICOM whose Modality tag
    is not an X-ray's (CT, MR, ...) is refused unless ``check_modality`` is false.

    Raises:
        DataError: naming the file, for unreadable files and for anything that is not one 2D image.
    """
    if kind == "volume":
        raise not_2d(path, "a volume file (NIfTI/NRRD/MetaImage)")
    if kind == "dicom":
        return _probe_dicom(path, verify, check_modality)
    return _probe_raster(path, verify)


def _unreadable(path: Path, what: str, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot read this file as {what} ({type(exc).__name__}: {exc}); {_FIX}")


def _probe_raster(path: Path, verify: bool) -> Header:
    try:
        with Image.open(path) as img:
            width, height = img.size
            frames = int(getattr(img, "n_frames", 1)) if img.format == "TIFF" else 1
            if verify:
                img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, "a PNG/JPEG/TIFF image", exc) from exc
    if frames > 1:
        raise not_2d(path, f"a multi-page TIFF with {frames} pages (a stack)")
    check_edges(path, (width, height), "image")
    return Header("raster", width, height, None)


def _read_dicom(path: Path, *, pixels: bool) -> Any:
    import pydicom

    try:
        with warnings_of(path):  # pydicom's value warnings, named with the file, once each
            return convert_all(pydicom.dcmread(path, stop_before_pixels=not pixels))
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise _unreadable(path, "DICOM", exc) from exc


def _check_dicom(path: Path, ds: Any) -> None:
    if ds.get("Rows") is None or ds.get("Columns") is None:
        sop = ds.get("SOPClassUID", "unknown")
        raise DataError(f"{path}: this DICOM holds no image (no Rows/Columns; SOP class {sop}); "
                        f"expected a 2D X-ray image — {_FIX}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise not_2d(path, f"a multi-frame DICOM with {frames} frames (a volume or cine)")


def _probe_dicom(path: Path, verify: bool, check_modality: bool = True) -> Header:
    from medkit.api import check_dicom_decodable, check_dicom_modality

    ds = _read_dicom(path, pixels=verify)
    check_dicom_modality(path, ds, "xray", check=check_modality)
    _check_dicom(path, ds)
    check_dicom_decodable(path, ds, _FIX)  # at indexing: names the decoder package to install
    if verify:
        _dicom_pixels(path, ds)
    view = str(ds.get("ViewPosition", "") or "").strip() or None
    check_edges(path, (int(ds.Columns), int(ds.Rows)), "image")
    description = " ".join(str(ds.get("SeriesDescription", "") or "").split()) or None
    uids = {t: str(ds.get(t, "") or "").strip() for t in UID_TAGS}
    return Header("dicom", int(ds.Columns), int(ds.Rows), view, description, {k: v for k, v in uids.items() if v})


# -- pixels ---------------------------------------------------------------------------------------
def reduce_factor(size: Sequence[int], min_side: int | None) -> int:
    """The largest integer factor that keeps every edge of ``size`` at least ``min_side`` (1: none)."""
    if not min_side:
        return 1
    return max(1, min(int(v) for v in size) // int(min_side))


def reduce_grey(values: np.ndarray, min_side: int | None) -> np.ndarray:
    """``values`` ``[H, W]`` as float32, box-averaged by :func:`reduce_factor` (Pillow's ``reduce``:
    every source pixel counts once, so nothing aliases; a partial last row/column is averaged over
    what it has)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    factor = reduce_factor(values.shape, min_side)
    if factor == 1:
        return values
    return np.asarray(Image.fromarray(values).reduce(factor))


def read_grey(path: Path, kind: str, *, intensity: str = "auto",
              percentiles: Sequence[float] = (0.5, 99.5), min_side: int | None = None) -> np.ndarray:
    """Grey values of one X-ray as ``[H, W]`` float32 in [0, 1] (see the README for the scaling).

    With ``min_side``, an image larger than needed is first reduced by the largest integer factor
    that keeps both edges at least ``min_side`` pixels (:func:`reduce_grey`; a JPEG is decoded at
    that scale by libjpeg's DCT scaling, Pillow's ``draft``), and the intensity scaling (percentiles
    included) runs on the reduced image: a 2048² radiograph needed at 224² is scaled at 512².

    Raises:
        DataError: naming the file when it cannot be decoded or is not one 2D image.
    """
    if kind == "volume":
        raise not_2d(path, "a volume file (NIfTI/NRRD/MetaImage)")
    if kind == "dicom":
        return _dicom_grey(path, intensity, percentiles, min_side)
    try:
        with Image.open(path) as img:
            frames = int(getattr(img, "n_frames", 1)) if img.format == "TIFF" else 1
            if frames > 1:
                raise not_2d(path, f"a multi-page TIFF with {frames} pages (a stack)")
            factor = reduce_factor(img.size, min_side)
            if factor > 1 and img.format == "JPEG" and img.mode in ("L", "RGB", "YCbCr"):
                # DCT scaling (1/2, 1/4, 1/8) decodes only what is needed, never below the asked size
                img.draft("L", (math.ceil(img.width / factor), math.ceil(img.height / factor)))
            img.load()
            factor = reduce_factor(img.size, min_side)
            if factor > 1 and img.mode.startswith("I;16") and intensity in ("auto", "percentile"):
                return _reduced_16bit(img, factor, percentiles)
            values, type_max = _raster_values(img)
            check_finite(path, values, "pixels")
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, "a PNG/JPEG/TIFF image", exc) from exc
    return scale_to_unit(reduce_grey(values, min_side), intensity=intensity, percentiles=percentiles,
                         type_max=type_max, full=values)


def _reduced_16bit(img: Image.Image, factor: int, percentiles: Sequence[float]) -> np.ndarray:
    """A 16-bit image reduced and percentile-scaled without a full-size NumPy copy: Pillow converts
    it to float32, box-averages it, and takes the regular sample the percentiles come from (nearest
    neighbour on a grid as large as the result), so only small arrays reach NumPy. The same values as
    :func:`reduce_grey` + :func:`scale_to_unit` up to the sampling grid's phase."""
    full = img.convert("F")  # integers: always finite
    values = np.asarray(full.reduce(factor))
    sample = np.asarray(full.resize((values.shape[1], values.shape[0]), Image.Resampling.NEAREST))
    return scale_to_unit(values, intensity="percentile", percentiles=percentiles, type_max=None, full=sample)


def _raster_values(img: Image.Image) -> tuple[np.ndarray, float | None]:
    """Grey values (float32) and the maximum of their integer type (``None`` for float images)."""
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.float32), 65535.0
    if mode in ("I", "I;32"):
        arr = np.asarray(img)
        type_max = 65535.0 if arr.size and arr.min() >= 0 and arr.max() <= 65535 else None
        return arr.astype(np.float32), type_max
    if mode == "F":
        return np.asarray(img).astype(np.float32), None
    # 1, L, P, RGB, RGBA, LA, CMYK, YCbCr...: 8-bit; colour goes to ITU-R 601-2 luma, alpha is dropped
    grey = img if mode == "L" else img.convert("L")
    return np.asarray(grey).astype(np.float32), 255.0


def _dicom_pixels(path: Path, ds: Any) -> np.ndarray:
    from medkit.api import dicom_decode_error

    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # missing codec (named with the package to install), truncated data, bad tags...
        raise dicom_decode_error(path, ds, exc, _FIX) from exc


def _dicom_grey(path: Path, intensity: str, percentiles: Sequence[float], min_side: int | None) -> np.ndarray:
    """Decoded once per process (a JPEG-2000 CR takes seconds), then served from the LRU (which
    holds the reduced image: 16 times more of them at 2048² → 512²)."""
    from medkit.api import cached_image as cached, dicom_file_key as file_key

    try:
        key = file_key(path, "xray", intensity, tuple(float(p) for p in percentiles), min_side)
    except OSError as exc:
        raise _unreadable(path, "DICOM", exc) from exc
    return cached(key, lambda: _decode_grey(path, intensity, percentiles, min_side))


def _decode_grey(path: Path, intensity: str, percentiles: Sequence[float], min_side: int | None = None
                 ) -> np.ndarray:
    from medkit.api import decode_dicom as decode

    ds = _read_dicom(path, pixels=True)
    _check_dicom(path, ds)
    if intensity == "dtype":
        stored = _dicom_pixels(path, ds)
        if stored.ndim != 2:
            raise not_2d(path, f"DICOM pixel data of shape {list(stored.shape)}")
        stored = reduce_grey(stored, min_side)
        bits = int(ds.get("BitsStored", 16) or 16)
        low = -(2.0 ** (bits - 1)) if int(ds.get("PixelRepresentation", 0) or 0) == 1 else 0.0
        out = np.clip((stored - low) / (2.0 ** bits - 1.0), 0.0, 1.0)
    elif intensity == "auto" and (bounds := linear_window(ds)) is not None:
        # a linear window: reduced first, windowed on the reduced image (exact; see reduce_windowed)
        stored = _dicom_pixels(path, ds)
        if stored.ndim != 2:
            raise not_2d(path, f"DICOM pixel data of shape {list(stored.shape)}")
        if np.iscomplexobj(stored):
            raise DataError(f"{path}: holds complex pixel values; expected a 2D grey image — {_FIX}")
        if stored.dtype.kind == "f":
            check_finite(path, stored, "pixels")
        out = reduce_windowed(stored, bounds, reduce_factor(stored.shape, min_side))
    else:
        px = decode(path, ds)  # Modality LUT, then VOI LUT / window with VOILUTFunction (pydicom)
        if intensity == "auto" and px.voi is not None:
            out = reduce_grey(px.voi, min_side)  # a VOI LUT or sigmoid: at full resolution (not linear)
        else:
            out = scale_to_unit(reduce_grey(px.values, min_side), intensity=intensity, percentiles=percentiles,
                                type_max=None, full=px.values)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are white; flip so that bone is bright everywhere
    return out.astype(np.float32)


def scale_to_unit(values: np.ndarray, *, intensity: str, percentiles: Sequence[float],
                  type_max: float | None, window: tuple[float, float] | None = None,
                  full: np.ndarray | None = None) -> np.ndarray:
    """Map intensities to [0, 1].

    ``auto``: 8-bit images are divided by 255; a DICOM window ``(center, width)`` maps linearly
    ``[c - w/2, c + w/2]`` → [0, 1]; anything else (16-bit, float, DICOM without a window) is clipped
    to its ``percentiles`` and rescaled. ``percentile`` and ``minmax`` apply to every file;
    ``dtype`` divides by the integer type's maximum (floats are clipped).

    ``full``: the full-resolution image ``values`` was reduced from (:func:`reduce_grey`). The
    range is then taken from it, not from the box-averaged pixels (whose noise is smaller, so
    their percentiles move inwards): min/max over all of it, percentiles over a regular grid of
    as many pixels as ``values`` has (every ``k``-th row and column, an unbiased sample).
    """
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")
    values = values.astype(np.float32, copy=False)  # float32 throughout: half the memory traffic of float64
    if intensity == "dtype" or (intensity == "auto" and type_max == 255.0):
        scaled = values / type_max if type_max else values
        return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)
    if intensity == "auto" and window is not None:
        low, high = window[0] - window[1] / 2.0, window[0] + window[1] / 2.0
    elif intensity == "minmax":
        ref = values if full is None else full
        low, high = float(ref.min()), float(ref.max())
    else:
        ref = values
        if full is not None:  # the full image, or a regular sample of it as large as values
            k = max(1, round(math.sqrt(full.size / max(1, values.size))))
            ref = np.asarray(full[::k, ::k], dtype=np.float32)
        low, high = (float(v) for v in np.percentile(ref, [percentiles[0], percentiles[1]]))
    if not high > low:
        return np.zeros(values.shape, np.float32)  # a constant image carries no contrast
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32, copy=False)
