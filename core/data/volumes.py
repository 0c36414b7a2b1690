"""Indexing 3D volumes (NIfTI, DICOM series, DICOM files) from headers and reading them via MONAI."""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from medkit.api.errors import DataError
from medkit.data.walk import walk
from medkit.data.dicom_geometry import file_affine, has_pixel_spacing, in_plane, slice_step
from medkit.data.checks import MIN_EDGE, check_edges, check_finite  # noqa: F401 - re-exported
from medkit.data.checks import attribute_warnings, check_nifti_file, check_nifti_geometry
from medkit.data.checks import convert_all, warnings_of
from medkit.data.dicom_checks import check_dicom_modality, series_label
from medkit.data.dicom_codecs import check_decodable, missing_decoder_of
from medkit.data.dicom_enhanced import enhanced_affine, enhanced_file, is_enhanced, read_enhanced

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Largest relative deviation of one DICOM slice gap from the series' median gap.
SPACING_TOLERANCE = 0.1
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

    @property
    def where(self) -> str:
        """The file, or the folder, first file and series UID of a DICOM series, for messages."""
        if self.kind == "series":
            uid = f", UID {self.series}" if self.series else ""
            return f"{os.path.dirname(self.paths[0])} (series {len(self.paths)} files from " \
                   f"{os.path.basename(self.paths[0])}{uid})"
        return self.paths[0]


class _Uids(TypedDict):
    patient: str | None
    study: str | None
    series: str | None


def _uids(ds: Any) -> _Uids:
    def text(key: str) -> str | None:
        value = str(ds.get(key, "") or "").strip()
        return value or None
    return {"patient": text("PatientID"), "study": text("StudyInstanceUID"), "series": text("SeriesInstanceUID")}


def slice_axis(affine: np.ndarray, axcodes: str) -> int:
    """Array axis that becomes the last (slice) axis once MONAI's ``Orientation(axcodes)`` ran."""
    import nibabel as nib

    src = nib.orientations.io_orientation(np.asarray(affine, dtype=float))
    world = nib.orientations.axcodes2ornt(tuple(axcodes))[2, 0]
    hits = np.nonzero(src[:, 0] == world)[0]
    return int(hits[0]) if len(hits) else 2


def _spacing(affine: np.ndarray, axis: int) -> float:
    step = float(np.linalg.norm(np.asarray(affine)[:3, axis]))
    return step if step > 1e-6 else 1.0


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
    return Volume(rel, "nifti", (str(path),), shape[axis], _spacing(affine, axis), frames)


# -- DICOM -------------------------------------------------------------------------------------
def is_dicom_file(path: Path) -> bool:
    """``.dcm`` files, and extension-less files with the DICOM preamble (``DICM`` at byte 128)."""
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _header(path: Path) -> Any:
    import pydicom

    try:
        with warnings_of(path):  # pydicom's value warnings, named with the file, once each
            ds = convert_all(pydicom.dcmread(str(path), stop_before_pixels=True))
    except Exception as exc:
        raise DataError(f"{path}: cannot read it as DICOM ({type(exc).__name__}: {exc}); {EXPECTED}; "
                        f"remove the file or set on_error=skip") from exc
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(f"{path}: {EXPECTED} with one grey channel, got SamplesPerPixel="
                        f"{ds.get('SamplesPerPixel')} (a colour image)")
    if "Rows" in ds:
        check_decodable(path, ds)  # at indexing, not mid-run: names the decoder to install
    return ds


def _require_spacing(where: Any, ds: Any, *, slices: bool) -> None:
    """Refuse a header without its voxel size (docs/run-safety.md: every modality resamples to a
    spacing in millimetres, so an assumed 1 mm would silently stretch or squash the anatomy)."""
    missing = [] if has_pixel_spacing(ds) else ["PixelSpacing"]
    if slices and slice_step(ds) is None:
        missing.append("SliceThickness/SpacingBetweenSlices")
    if missing:
        raise DataError(f"{where}: no {' or '.join(missing)} in the DICOM header, so its voxel size is "
                        f"unknown (medkit assumes none: resampling would distort the anatomy); re-export it "
                        f"with its geometry, remove it, or set on_error=skip")


def _dicom_file(path: Path, rel: str, axcodes: str, ds: Any) -> Volume:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _require_spacing(path, ds, slices=frames > 1)
    affine = file_affine(ds)
    shape = (int(ds.Columns), int(ds.Rows), frames)
    if frames > 1 and is_enhanced(ds):  # per-frame positions and orientation (functional groups)
        affine, shape = enhanced_affine(path, ds)
    check_edges(path, shape)
    axis = slice_axis(affine, axcodes)
    return Volume(rel, "dicom", (str(path),), shape[axis], _spacing(affine, axis),
                  affine=tuple(float(v) for v in affine.ravel()), **_uids(ds))


def _series(folder: Path, rel: str, files: list[Path], headers: list[Any], axcodes: str) -> Volume:
    """Single-frame slices of one series, ordered by InstanceNumber as MONAI's PydicomReader does;
    the slice gaps along the slice normal must be even (within :data:`SPACING_TOLERANCE`)."""
    uids = _uids(headers[0])
    where = series_label(folder, files, headers[0])
    pairs = [(ds, p) for ds, p in zip(headers, files) if "InstanceNumber" in ds]
    if len(pairs) < len(files):
        log.warning("%s: %d slices have no InstanceNumber and are ignored", where, len(files) - len(pairs))
    if not pairs:
        raise DataError(f"{where}: no slice has an InstanceNumber, so the series cannot be ordered")
    pairs.sort(key=lambda t: int(t[0].InstanceNumber))
    first, last = pairs[0][0], pairs[-1][0]
    if {(int(ds.Rows), int(ds.Columns)) for ds, _ in pairs} != {(int(first.Rows), int(first.Columns))}:
        raise DataError(f"{where}: slices of one series must share Rows x Columns")
    ipp0, ipp1 = first.get("ImagePositionPatient"), last.get("ImagePositionPatient")
    _require_spacing(f"{where}, slice {pairs[0][1].name}", first, slices=ipp0 is None or ipp1 is None)
    row, col, dr, dc = in_plane(first)
    affine = np.eye(4)
    affine[:3, 0] = row * dc
    affine[:3, 1] = col * dr
    affine[:3, 2] = np.cross(row, col) * (slice_step(first) or 1.0)
    if ipp0 is not None and ipp1 is not None and len(pairs) > 1:
        affine[:3, 2] = (np.array(ipp1, dtype=float) - np.array(ipp0, dtype=float)) / (len(pairs) - 1)
        if np.linalg.norm(affine[:3, 2]) < 1e-6:
            raise DataError(f"{where}: every slice has the same ImagePositionPatient; "
                            f"slices of one series must be at distinct positions")
        _check_gaps(where, [ds for ds, _ in pairs], np.cross(row, col))
    affine[:2] *= -1
    shape = (int(first.Columns), int(first.Rows), len(pairs))
    check_edges(where, shape, "series")
    axis = slice_axis(affine, axcodes)
    # MONAI globs the folder itself: keep its spelling of each path so our regex selects them
    paths = tuple(os.path.join(str(folder), p.name) for _, p in pairs)
    return Volume(rel, "series", paths, shape[axis], _spacing(affine, axis), **uids)


def _check_gaps(where: str, headers: list[Any], normal: np.ndarray) -> None:
    """Refuse a series whose slice positions (in InstanceNumber order) are not evenly spaced."""
    pos = [float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal))
           for ds in headers if ds.get("ImagePositionPatient") is not None]
    if len(pos) < 3:
        return
    gaps = np.diff(np.array(pos))
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(median) < 1e-6 or abs(gaps[worst] - median) > SPACING_TOLERANCE * abs(median):
        raise DataError(f"{where}: uneven slice spacing: the gap after slice {worst + 1} of {len(pos)} is "
                        f"{abs(gaps[worst]):.4g} mm, the series' median gap is {abs(median):.4g} mm "
                        f"(tolerance {SPACING_TOLERANCE:.0%}); missing or duplicated slices — re-export the "
                        f"series, remove it, or set on_error=skip")


def _dicom_folder(folder: Path, folder_id: str, files: list[Path], base: Path, axcodes: str,
                  on_error: str = "raise", modality: str = "", check_modality: bool = True,
                  ) -> tuple[list[Volume], list[tuple[str, str]]]:
    """Multi-frame files are volumes of their own; the single-frame images of a folder form one
    volume per SeriesInstanceUID (id: the folder when it holds one series, else
    ``<folder>/<SeriesInstanceUID>``); DICOM objects without an image (DICOMDIR, RTSTRUCT, SR, ...)
    are ignored. A bad file or series is skipped with ``on_error="skip"``; one whose Modality tag is
    not ``modality``'s is refused (:func:`~medkit.data.dicom_checks.check_dicom_modality`)."""
    def rel(p: Path) -> str:
        return p.relative_to(base).as_posix()

    out: list[Volume] = []
    skipped: list[tuple[str, str]] = []

    def attempt(what: str, make: Any) -> Any:
        try:
            return make()
        except DataError as exc:
            if on_error != "skip":
                raise
            log.warning("skipping %s: %s", what, exc)
            skipped.append((what, str(exc)))
            return None

    def belongs(what: str, where: Any, ds: Any) -> bool:
        def check() -> bool:
            check_dicom_modality(where, ds, modality, check=check_modality)
            return True
        return bool(attempt(what, check))

    pairs = [(p, ds) for p in files if (ds := attempt(rel(p), lambda p=p: _header(p))) is not None]
    images = [(p, ds) for p, ds in pairs if "Rows" in ds and "Columns" in ds]
    for p, ds in pairs:
        if "Rows" not in ds or "Columns" not in ds:
            log.info("%s: DICOM object without an image (no Rows/Columns), ignored", p)
    single: dict[str, list[tuple[Path, Any]]] = {}
    for p, ds in images:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            if not belongs(rel(p), p, ds):
                continue
            vol = attempt(rel(p), lambda p=p, ds=ds: _dicom_file(p, rel(p), axcodes, ds))
            out.extend([vol] if vol is not None else [])
        else:
            single.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((p, ds))
    for uid, members in sorted(single.items()):
        sid = folder_id if len(single) == 1 else f"{folder_id}/{uid or 'no-series-uid'}"
        what = rel(members[0][0]) if len(members) == 1 else sid
        where = members[0][0] if len(members) == 1 else series_label(folder, [p for p, _ in members],
                                                                     members[0][1])
        if not belongs(what, where, members[0][1]):
            continue
        if len(members) == 1:
            p, ds = members[0]
            vol = attempt(rel(p), lambda p=p, ds=ds: _dicom_file(p, rel(p), axcodes, ds))
        else:
            vol = attempt(sid, lambda sid=sid, m=members: _series(folder, sid, [p for p, _ in m],
                                                                   [ds for _, ds in m], axcodes))
        out.extend([vol] if vol is not None else [])
    if len(single) > 1:
        log.info("%s: %d DICOM series, one volume each", folder, len(single))
    return out, skipped


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
                      _dicom_folder(f, s, g, base, axcodes, on_error, modality, check_modality)))
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

