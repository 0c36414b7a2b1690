"""Indexing DICOM volumes from headers: single- and multi-frame files, and series of slices in a folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medkit.api.errors import DataError
from medkit.data.checks import check_edges, convert_all, warnings_of
from medkit.data.dicom_checks import check_dicom_modality, series_label
from medkit.data.dicom_codecs import check_decodable
from medkit.data.dicom_enhanced import enhanced_affine, is_enhanced
from medkit.data.dicom_geometry import file_affine, has_pixel_spacing, in_plane, slice_step
from medkit.data.volume_types import EXPECTED, Volume, axis_spacing, dicom_uids, oriented_shape, slice_axis

log = logging.getLogger(__name__)

#: Largest relative deviation of one DICOM slice gap from the series' median gap.
SPACING_TOLERANCE = 0.1


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
    return Volume(rel, "dicom", (str(path),), shape[axis], axis_spacing(affine, axis),
                  affine=tuple(float(v) for v in affine.ravel()), shape=oriented_shape(affine, shape, axcodes),
                  **dicom_uids(ds))


def _series(folder: Path, rel: str, files: list[Path], headers: list[Any], axcodes: str) -> Volume:
    """Single-frame slices of one series, ordered by InstanceNumber as MONAI's PydicomReader does;
    the slice gaps along the slice normal must be even (within :data:`SPACING_TOLERANCE`)."""
    uids = dicom_uids(headers[0])
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
    return Volume(rel, "series", paths, shape[axis], axis_spacing(affine, axis),
                  shape=oriented_shape(affine, shape, axcodes), **uids)


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


def dicom_folder(folder: Path, folder_id: str, files: list[Path], base: Path, axcodes: str,
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
