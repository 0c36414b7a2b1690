"""Enhanced (functional-group) multi-frame DICOM volumes through highdicom: per-frame rescale, position
and orientation, which pydicom's ``apply_modality_lut`` and MONAI's reader read only at the top level."""

from __future__ import annotations

from typing import Any

import numpy as np

from medkit.api.errors import DataError

_FIX = "re-export it, remove it, or set on_error=skip"


def is_enhanced(ds: Any) -> bool:
    """Whether ``ds`` keeps its geometry and rescale in functional-group sequences (enhanced CT/MR/PET
    and other multi-frame IODs), where top-level ``ImagePositionPatient``/``RescaleIntercept`` are absent."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def enhanced_file(path: Any) -> bool:
    """Whether the DICOM file at ``path`` is an enhanced multi-frame file (header only)."""
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return int(ds.get("NumberOfFrames", 1) or 1) > 1 and is_enhanced(ds)


def _ras(affine_lps: np.ndarray) -> np.ndarray:
    """highdicom's LPS affine over array axes (frame, row, column) as a RAS affine over (column, row,
    frame), the layout every other DICOM volume in medkit has."""
    out = np.eye(4)
    out[:3, 0] = affine_lps[:3, 2]
    out[:3, 1] = affine_lps[:3, 1]
    out[:3, 2] = affine_lps[:3, 0]
    out[:3, 3] = affine_lps[:3, 3]
    out[:2] *= -1  # LPS -> RAS
    return out


def _image(where: Any, ds: Any) -> Any:
    import highdicom as hd

    try:
        return hd.Image.from_dataset(ds, copy=False)
    except Exception as exc:  # highdicom validates the functional groups of the IOD
        raise DataError(f"{where}: its enhanced multi-frame header cannot be read as an image "
                        f"({type(exc).__name__}: {exc}); {_FIX}") from exc


def enhanced_affine(where: Any, ds: Any) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(RAS affine over (column, row, frame), shape) of an enhanced multi-frame header, its frames
    sorted along the slice normal by their PlanePositionSequence (header only: no pixel data needed).

    Raises:
        DataError: the frames do not form one regular volume (gaps, several stacks, tilted frames).
    """
    try:
        geometry = _image(where, ds).get_volume_geometry()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{where}: its frames do not form one regularly spaced volume ({exc}); {_FIX}") from exc
    if geometry is None:
        raise DataError(f"{where}: its frames do not form one regularly spaced volume (positions or "
                        f"orientations differ, or gaps are uneven); {_FIX}")
    frames, rows, cols = (int(v) for v in geometry.spatial_shape)
    return _ras(np.asarray(geometry.affine, dtype=np.float64)), (cols, rows, frames)


def read_enhanced(where: Any, path: Any) -> tuple[np.ndarray, np.ndarray]:
    """(float32 array ``[column, row, frame]`` through each frame's Pixel Value Transformation (rescale),
    RAS affine) of the enhanced multi-frame file at ``path``.

    Raises:
        DataError: the frames do not form one regular volume.
    """
    import pydicom

    ds = pydicom.dcmread(str(path))
    try:
        volume = _image(where, ds).get_volume(apply_real_world_transform=False,
                                              apply_modality_transform=True)
    except DataError:
        raise
    except RuntimeError:
        raise  # a missing decoder: the caller names the package to install
    except Exception as exc:
        raise DataError(f"{where}: its frames do not form one regularly spaced volume ({exc}); {_FIX}") from exc
    arr = np.asarray(volume.array, dtype=np.float32)  # [frame, row, column]
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), _ras(np.asarray(volume.affine, dtype=np.float64))
