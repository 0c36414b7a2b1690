"""DICOM image pixels through pydicom's LUTs (modality, VOI, MONOCHROME1), decoded once per process."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch

from medkit.api.errors import DataError
from medkit.data.cache import DiskCache, VolumeCache
from medkit.data.checks import check_finite, convert_all, warnings_of
from medkit.data.dicom_codecs import decode_error

log = logging.getLogger(__name__)

#: Bytes of decoded 2D DICOM images kept per process (float32).
IMAGE_CACHE_BYTES = 512 << 20
_CACHE = VolumeCache(IMAGE_CACHE_BYTES, owner="DICOM image cache")
_FIX = "replace or remove the file, or set on_error=skip to skip such files"


@dataclass(frozen=True)
class DicomPixels:
    """One decoded 2D DICOM image.

    Attributes:
        values: ``[H, W]`` float64: stored values through the Modality LUT (RescaleSlope/Intercept
            or Modality LUT Sequence).
        voi: ``values`` through the VOI LUT (VOI LUT Sequence, or WindowCenter/Width with its
            ``VOILUTFunction``) scaled to [0, 1], or ``None`` when the file has no VOI transform.
        monochrome1: PhotometricInterpretation MONOCHROME1 (low values are white); not yet inverted.
        colour: the file held RGB, converted to luma (no LUT applies then).
    """

    values: np.ndarray
    voi: np.ndarray | None
    monochrome1: bool
    colour: bool = False


def _voi_range(ds: Any, arr: np.ndarray) -> tuple[float, float] | None:
    """The output range of the dataset's VOI transform, or ``None`` when it has none."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
        return 0.0, float(2 ** bits - 1)
    if ds.get("WindowCenter") in (None, "") or ds.get("WindowWidth") in (None, ""):
        return None
    big = float(np.abs(arr).max()) * 4 + 1e6  # windowing is monotonic: its ends give the range
    with np.errstate(over="ignore"):  # a SIGMOID window saturates at the ends
        ends = apply_voi_lut(np.array([-big, big], dtype=np.float64), ds)
    low, high = float(np.min(ends)), float(np.max(ends))
    return (low, high) if high > low else None


def decode(path: Path, ds: Any | None = None) -> DicomPixels:
    """Decode ``path`` (a single-frame 2D image) through pydicom's ``apply_modality_lut`` and
    ``apply_voi_lut``.

    Raises:
        DataError: naming the file: unreadable, undecodable (missing codec), not one 2D frame,
            complex or non-finite values.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        if ds is None:
            with warnings_of(path):
                ds = convert_all(pydicom.dcmread(str(path)))
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise DataError(f"{path}: cannot read this file as DICOM ({type(exc).__name__}: {exc}); {_FIX}") from exc
    try:
        stored = np.asarray(ds.pixel_array)
    except Exception as exc:  # missing codec, truncated data, bad tags...
        raise decode_error(path, ds, exc, _FIX) from exc
    if np.iscomplexobj(stored):
        raise DataError(f"{path}: holds complex pixel values; expected a 2D grey image — {_FIX}")
    colour = int(ds.get("SamplesPerPixel", 1) or 1) == 3 and stored.ndim == 3 and stored.shape[-1] == 3
    if colour:
        stored = stored @ np.array([0.299, 0.587, 0.114])  # pydicom gives RGB → ITU-R 601 luma
        values = stored.astype(np.float64)
    elif stored.ndim != 2:
        raise DataError(f"{path}: expected a 2D image, got DICOM pixel data of shape {list(stored.shape)} — {_FIX}")
    else:
        native = np.asarray(apply_modality_lut(stored, ds))  # integers unless rescaled
        values = native.astype(np.float64)
    check_finite(path, values, "pixels")
    mono1 = str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
    span = None if colour else _voi_range(ds, values)
    if span is None:
        return DicomPixels(values, None, mono1, colour)
    with np.errstate(over="ignore"):
        out = np.asarray(apply_voi_lut(native, ds), dtype=np.float64)
    return DicomPixels(values, np.clip((out - span[0]) / (span[1] - span[0]), 0.0, 1.0), mono1, colour)


def file_key(path: Path, *extra: Hashable) -> tuple[Hashable, ...]:
    """A cache key that changes when the file does (path, size, modification time) and with ``extra``."""
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, *extra)


def cached(key: tuple[Hashable, ...], make: Callable[[], np.ndarray], disk: DiskCache | None = None,
           sources: Sequence[str] = ()) -> np.ndarray:
    """``make()`` (a float32 image) once per process for ``key``, then from the bounded LRU.

    With a ``disk`` cache (keyed by the contents of ``sources`` and its fingerprint, which must
    cover every option ``make`` depends on), the decoded image also outlives the process, so
    DataLoader workers and later runs do not decode it again."""
    hit = _CACHE.get(key)
    if hit is None and disk is not None:
        hit = disk.read(sources)
    if hit is None:
        hit = torch.from_numpy(np.ascontiguousarray(make(), dtype=np.float32))
        if disk is not None:
            disk.write(sources, hit)
    if _CACHE.get(key) is None:
        _CACHE.put(key, hit)
    out = hit.numpy()
    out.flags.writeable = False  # shared with the cache
    return out


def clear_cache() -> None:
    """Forget every decoded image (tests; a changed file is never served anyway)."""
    _CACHE.clear()
