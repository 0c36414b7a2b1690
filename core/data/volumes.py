"""Indexing 3D volumes (NIfTI, DICOM series, DICOM files) from headers and reading them via MONAI.

The :class:`Volume` record lives in :mod:`medkit.data.volume_types` and DICOM indexing in
:mod:`medkit.data.volume_dicom`; both are re-exported here, where callers import them from.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medkit.api.errors import DataError
from medkit.data.walk import walk
from medkit.data.checks import MIN_EDGE, check_edges, check_finite  # noqa: F401 - re-exported
from medkit.data.checks import attribute_warnings, check_nifti_file, check_nifti_geometry, warnings_of
from medkit.data.dicom_codecs import missing_decoder_of
from medkit.data.dicom_enhanced import enhanced_file, read_enhanced
from medkit.data.volume_dicom import SPACING_TOLERANCE, dicom_folder, is_dicom_file  # noqa: F401 - re-exported
from medkit.data.volume_types import (
    EXPECTED, IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES, Volume, axis_spacing, oriented_shape, slice_axis,
)

log = logging.getLogger(__name__)


# -- NIfTI -------------------------------------------------------------------------------------
def _nifti(path: Path, rel: str, axcodes: str) -> Volume:
    import nibabel as nib

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_nifti_file(path)  # before nibabel "fixes" a bad pixdim (abs(), 0 → 1) in a log line
            img: Any = nib.load(str(path))  # lazy: header only (its class depends on the file)
            shape = tuple(int(s) for s in img.shape)
            affine = np.asarray(img.affine, dtype=np.float64)
            dtype = np.dtype(img.get_data_dtype())
    except DataError:
        raise
    except Exception as exc:  # any reader failure is a data problem
        raise DataError(f"{path}: cannot read it as NIfTI ({type(exc).__name__}: {exc}); {EXPECTED}; "
                        f"re-export the file, remove it, or set on_error=skip") from exc
    attribute_warnings(path, caught)
    check_nifti_geometry(path, affine, None)
    if len(shape) < 3 or len(shape) > 4:
        raise DataError(f"{path}: {EXPECTED}, got a {len(shape)}D image of shape {shape}; "
                        f"4D files are read as their first frame, other dimensions are not supported")
    if dtype.kind == "c":
        raise DataError(f"{path}: holds complex values ({dtype}); {EXPECTED} of real intensities — "
                        f"export the magnitude (np.abs) or remove the file")
    if dtype.names:
        raise DataError(f"{path}: holds structured (e.g. RGB) voxels ({dtype}); {EXPECTED} of one channel")
    check_edges(path, shape[:3])
    frames = shape[3] if len(shape) == 4 else 1
    if frames > 1:
        log.info("%s: 4D NIfTI with %d frames; using the first frame only", path, frames)
    axis = slice_axis(affine, axcodes)
    return Volume(rel, "nifti", (str(path),), shape[axis], axis_spacing(affine, axis), frames,
                  shape=oriented_shape(affine, shape[:3], axcodes))


# -- discovery ---------------------------------------------------------------------------------
def find_volumes(root: Path, axcodes: str, on_error: str = "raise", *, modality: str = "",
                 check_modality: bool = True) -> tuple[list[Volume], list[tuple[str, str]]]:
    """Index every volume under ``root`` (a folder, a NIfTI file or a DICOM file) from headers.

    Only headers are read (nibabel's lazy header, pydicom with ``stop_before_pixels``), so a folder
    is indexed without touching pixel data; :func:`load_volume` reads the pixels. With ``modality``
    (``"ct"``, ``"mri"``), a DICOM file or series whose Modality tag is another is refused unless
    ``check_modality`` is false.

    Returns:
        (volumes sorted by id, skipped ``(file, reason)`` pairs when ``on_error="skip"``).

    Raises:
        DataError: ``root`` is missing or empty, or (``on_error="raise"``) a file is unreadable or not
            a 3D volume; the message names the file and what was expected.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder; {EXPECTED}")
    base = root.parent if root.is_file() else root
    skipped: list[tuple[str, str]] = []
    files = walk(root, skipped=skipped)[1]
    tasks: list[tuple[str, Any]] = []
    dicom_groups: dict[Path, list[Path]] = {}
    for p in files:
        name = p.name.lower()
        rel = p.relative_to(base).as_posix()
        if name.endswith(NIFTI_SUFFIXES):
            tasks.append((rel, lambda p=p, rel=rel: [_nifti(p, rel, axcodes)]))
        elif p.suffix.lower() in IMAGE_2D_SUFFIXES:
            tasks.append((rel, lambda p=p: _reject_2d(p)))
        elif is_dicom_file(p):
            dicom_groups.setdefault(p.parent, []).append(p)
    for folder, group in dicom_groups.items():
        series_id = folder.relative_to(base).as_posix()
        series_id = root.name if series_id == "." else series_id  # root itself is a series folder
        tasks.append((series_id, lambda f=folder, s=series_id, g=group:
                      dicom_folder(f, s, g, base, axcodes, on_error, modality, check_modality)))
    if not tasks:
        what = "is not a volume file" if root.is_file() else "is empty: found no .nii, .nii.gz or .dcm files"
        raise DataError(f"{root}: {what}; {EXPECTED}")
    volumes: list[Volume] = []
    for rel, task in tasks:
        try:
            found = task()
            if isinstance(found, tuple):  # a DICOM folder: (volumes, skipped)
                found, bad = found
                skipped.extend(bad)
            volumes.extend(found)
        except DataError as exc:
            if on_error != "skip":
                raise
            log.warning("skipping %s: %s", rel, exc)
            skipped.append((rel, str(exc)))
    if not volumes and skipped:
        raise DataError(f"{root}: no readable volume (all {len(skipped)} candidates skipped; first: "
                        f"{skipped[0][1]})")
    if not volumes:
        some = sorted(p for g in dicom_groups.values() for p in g)[:1]
        example = f" (e.g. {some[0]}: no Rows/Columns — a DICOMDIR, SR or RTSTRUCT, or a truncated header)" \
            if some else ""
        raise DataError(f"{root}: the folder is empty of volumes: its DICOM files hold no image{example}; "
                        f"{EXPECTED}")
    return sorted(volumes, key=lambda v: v.id), skipped


def _reject_2d(path: Path) -> list[Volume]:
    raise DataError(f"{path}: {EXPECTED}, got a 2D image file ({path.suffix}); "
                    f"move 2D images to a 2D modality's folder or set on_error=skip")


# -- reading pixels ----------------------------------------------------------------------------
def load_volume(vol: Volume, axcodes: str) -> Any:
    """Read ``vol`` through MONAI and return a float32 tensor ``[X, Y, Z]`` oriented to ``axcodes``
    (so ``Z``, the last axis, is the slice axis)."""
    import torch
    from monai.data import MetaTensor, PydicomReader
    from monai.transforms import LoadImage

    from medkit.data.readers import load_nifti, orient

    where = os.path.dirname(vol.paths[0]) if vol.kind == "series" else vol.paths[0]
    name = vol.where
    try:
        with warnings_of(name):  # the readers' warnings (and pydicom's log records), once, naming the file
            if vol.kind == "nifti":
                img = load_nifti(where, dtype=np.float32)  # the reader fine-tuning uses too
                img = img[:1]  # the first frame of a 4D file
            elif vol.kind == "series":
                pattern = "^(" + "|".join(re.escape(p) for p in vol.paths) + ")$"
                reader = PydicomReader(fname_regex=pattern)
                img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(where)
            elif enhanced_file(where):
                data_np, affine_np = read_enhanced(name, where)  # per-frame rescale and position
                img = MetaTensor(torch.from_numpy(data_np)[None], affine=torch.from_numpy(affine_np),
                                 meta={"space": "RAS"})
            else:
                raw = LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True)(where)
                data = raw.as_tensor()
                # MONAI gives (1, col, row) for one slice and (1, row, frame, col) for multi-frame
                data = data.unsqueeze(-1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
                affine = torch.tensor(vol.affine, dtype=torch.float64).reshape(4, 4)
                img = MetaTensor(data, affine=affine, meta={"space": "RAS"})
            if img.ndim != 4:
                raise DataError(f"{name}: {EXPECTED}, read an array of shape {tuple(img.shape[1:])}")
            if torch.is_complex(img.as_tensor()):
                raise DataError(f"{name}: holds complex values; {EXPECTED} of real intensities — "
                                f"export the magnitude or remove it")
            out = orient(img, axcodes)
    except DataError:
        raise
    except Exception as exc:
        why = None if vol.kind == "nifti" else missing_decoder_of(vol.paths[0])
        if why is not None:
            raise DataError(f"{name}: {why}; or set on_error=skip") from exc
        raise DataError(f"{name}: cannot read its pixel data ({type(exc).__name__}: {exc}); "
                        f"{EXPECTED}; re-export or remove it, or set on_error=skip") from exc
    arr = out.as_tensor()[0].to(torch.float32)
    check_finite(name, arr)
    if arr.shape[-1] != vol.slices:
        log.debug("%s: header predicted %d slices, read %d", where, vol.slices, arr.shape[-1])
    return arr

