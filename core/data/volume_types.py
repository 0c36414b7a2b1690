"""What indexing a 3D volume learns from its header: the :class:`Volume` record and its slice axis."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
EXPECTED = ("expected a 3D volume (a NIfTI .nii/.nii.gz file, a folder of DICOM .dcm slices "
            "or one single- or multi-frame .dcm file)")


@dataclass(frozen=True)
class Volume:
    """One volume found under a data root, described from its header alone.

    Attributes:
        id: posix path relative to the data root (the file, or the folder of a DICOM series).
        kind: ``"nifti"``, ``"series"`` (a folder of single-frame slices) or ``"dicom"`` (one file).
        paths: the file, or every slice of the series.
        slices: slices along the slice axis (the last axis after reorientation).
        spacing: millimetres between those slices.
        frames: frames of a 4D NIfTI (only the first is used), else 1.
        affine: for ``"dicom"`` files, the RAS affine built from the header (MONAI's reader does
            not place multi-frame files correctly); ``None`` otherwise.
        patient: DICOM PatientID (for patient-level splits), ``None`` when unknown (NIfTI).
        study: DICOM StudyInstanceUID, ``None`` when unknown.
        series: DICOM SeriesInstanceUID, ``None`` for NIfTI.
        shape: voxels along each axis once reoriented (``(X, Y, Z)``, ``Z`` the slice axis), for
            the upsampling check; ``None`` when not known.
        description: DICOM SeriesDescription, for messages; ``None`` when absent (NIfTI).
    """

    id: str
    kind: str
    paths: tuple[str, ...]
    slices: int
    spacing: float
    frames: int = 1
    affine: tuple[float, ...] | None = None
    patient: str | None = None
    study: str | None = None
    series: str | None = None
    shape: tuple[int, int, int] | None = None
    description: str | None = None

    @property
    def where(self) -> str:
        """The file, or the folder, first file and series UID of a DICOM series, for messages."""
        if self.kind == "series":
            uid = f", UID {self.series}" if self.series else ""
            return f"{os.path.dirname(self.paths[0])} (series {len(self.paths)} files from " \
                   f"{os.path.basename(self.paths[0])}{uid})"
        return self.paths[0]


class Uids(TypedDict):
    patient: str | None
    study: str | None
    series: str | None
    description: str | None


def dicom_uids(ds: Any) -> Uids:
    def text(key: str) -> str | None:
        value = str(ds.get(key, "") or "").strip()
        return value or None
    return {"patient": text("PatientID"), "study": text("StudyInstanceUID"), "series": text("SeriesInstanceUID"),
            "description": " ".join((text("SeriesDescription") or "").split()) or None}


def slice_axis(affine: np.ndarray, axcodes: str) -> int:
    """Array axis that becomes the last (slice) axis once MONAI's ``Orientation(axcodes)`` ran."""
    import nibabel as nib

    src = nib.orientations.io_orientation(np.asarray(affine, dtype=float))
    world = nib.orientations.axcodes2ornt(tuple(axcodes))[2, 0]
    hits = np.nonzero(src[:, 0] == world)[0]
    return int(hits[0]) if len(hits) else 2


def oriented_shape(affine: np.ndarray, shape: tuple[int, ...], axcodes: str) -> tuple[int, int, int]:
    """``shape`` (3 array axes) in the order MONAI's ``Orientation(axcodes)`` gives them."""
    import nibabel as nib

    src = nib.orientations.io_orientation(np.asarray(affine, dtype=float))
    out = []
    for i, world in enumerate(nib.orientations.axcodes2ornt(tuple(axcodes))[:, 0]):
        hits = np.nonzero(src[:, 0] == world)[0]
        out.append(int(shape[int(hits[0]) if len(hits) else i]))
    return out[0], out[1], out[2]


def axis_spacing(affine: np.ndarray, axis: int) -> float:
    step = float(np.linalg.norm(np.asarray(affine)[:3, axis]))
    return step if step > 1e-6 else 1.0
