"""Patient-space geometry of DICOM files from their headers (orientation, spacing, the RAS affine),
including the functional-group sequences of enhanced multi-frame files."""

from __future__ import annotations

from typing import Any

import numpy as np


def _first(ds: Any, seq: str, item: str, attr: str) -> Any:
    """``ds.<seq>[0].<item>[0].<attr>`` of the (shared) functional groups, or ``None``."""
    try:
        return getattr(getattr(ds, seq)[0], item)[0].get(attr)
    except (AttributeError, IndexError, TypeError):
        return None


def in_plane(ds: Any) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(row direction, column direction, row spacing, column spacing) in LPS, with fallbacks."""
    shared = "SharedFunctionalGroupsSequence"
    iop = ds.get("ImageOrientationPatient") or _first(ds, shared, "PlaneOrientationSequence",
                                                       "ImageOrientationPatient")
    px = ds.get("PixelSpacing") or _first(ds, shared, "PixelMeasuresSequence", "PixelSpacing")
    iop = [float(v) for v in iop] if iop is not None and len(iop) == 6 else [1, 0, 0, 0, 1, 0]
    dr, dc = (float(px[0]), float(px[1])) if px is not None and len(px) == 2 else (1.0, 1.0)
    return np.array(iop[:3]), np.array(iop[3:]), dr, dc


def has_pixel_spacing(ds: Any) -> bool:
    """Whether the header gives the in-plane voxel size (``PixelSpacing``, top level or shared group)."""
    px = ds.get("PixelSpacing") or _first(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence",
                                           "PixelSpacing")
    try:
        return px is not None and len(px) == 2 and all(float(v) > 0 for v in px)
    except (TypeError, ValueError):
        return False


def slice_step(ds: Any) -> float | None:
    """Millimetres between the frames of one file (spacing tags, frame offsets, slice thickness), or
    ``None`` when the header gives none."""
    shared = "SharedFunctionalGroupsSequence"
    step = None
    for value in (_first(ds, shared, "PixelMeasuresSequence", "SpacingBetweenSlices"),
                  ds.get("SpacingBetweenSlices"),
                  _first(ds, shared, "PixelMeasuresSequence", "SliceThickness")):
        if value not in (None, "") and float(value) > 0:
            step = float(value)
            break
    offsets = ds.get("GridFrameOffsetVector")
    if step is None and offsets is not None and len(offsets) > 1:
        step = abs(float(offsets[1]) - float(offsets[0])) or None
    if step is None and ds.get("SliceThickness") not in (None, "") and float(ds.SliceThickness) > 0:
        step = float(ds.SliceThickness)
    return step


def file_affine(ds: Any) -> np.ndarray:
    """RAS affine of one single- or multi-frame file, array laid out (column, row, frame)."""
    row, col, dr, dc = in_plane(ds)
    step = slice_step(ds)
    affine = np.eye(4)
    affine[:3, 0] = row * dc
    affine[:3, 1] = col * dr
    affine[:3, 2] = np.cross(row, col) * (step or 1.0)
    ipp = ds.get("ImagePositionPatient")
    if ipp is not None and len(ipp) == 3:
        affine[:3, 3] = [float(v) for v in ipp]
    affine[:2] *= -1  # LPS -> RAS
    return affine
