"""The ``xray`` modality: X-ray files (raster or DICOM), the frontal-view filter, patients from metadata."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PIL import Image

from medkit.api import Entry2D, Image2DModality, Index, Table, read_table
from medkit_plugin_xray.readers import INTENSITY_MODES, file_kind, probe, read_grey

log = logging.getLogger(__name__)

METADATA_CSV = "metadata.csv"
#: First word of a ViewPosition that marks a frontal projection (PA, AP, "AP AXIAL", "PA LLD"...).
FRONTAL_VIEWS = frozenset({"PA", "AP", "FRONTAL"})
PATIENT_COLUMNS = ("PatientID", "patient_id", "patient", "subject_id")


def is_frontal(view: str | None) -> bool | None:
    """``True`` for PA/AP views, ``False`` for any other stated view (LL, LATERAL, RL, LAO...),
    ``None`` when the view is unknown (such images are kept)."""
    if view is None or not view.strip():
        return None
    words = view.strip().upper().replace("_", " ").replace("-", " ").split()
    return words[0] in FRONTAL_VIEWS


class XrayModality(Image2DModality):
    """2D radiographs: PNG/JPEG/TIFF and DICOM, grey replicated to 3 channels, values in [0, 1].

    Samples are whole images (id: the relative path); their source is the patient when
    ``metadata.csv`` has a patient column (``PatientID``, ``patient_id``, ``patient``, ``subject_id``),
    else the image itself.

    Args:
        input_size: output edge; every image is resized to ``input_size``² (aspect ratio not kept,
            as the reference).
        frontal_only: drop images whose view (``metadata.csv`` or DICOM ``ViewPosition``) is not
            PA/AP; images of unknown view are kept. The MedCoSS reference used every image.
        normalize: ``none`` ([0, 1], the MedCoSS convention), ``imagenet`` or ``zscore`` (per image).
        intensity: how raw values reach [0, 1]: ``auto``, ``percentile``, ``minmax`` or ``dtype``
            (see the README).
        percentiles: clip range for ``percentile`` (and ``auto`` without a DICOM window).
        crop_scale: area range of the training RandomResizedCrop.
        hflip: random horizontal flip in training.
        folder_labels: without ``labels.csv``, take the class from the first folder level.
        verify: decode every file while indexing (catches truncated files; slower).
        on_error: ``raise`` (stop at the first bad file) or ``skip`` (log it, record it in
            ``dataset.skipped``).
        check_modality: refuse a DICOM whose Modality tag is not an X-ray's (CR, DX, DR, RG, MG, IO,
            PX; e.g. a CT slice); ``false`` reads it anyway.
        max_upsample: skip (with a reason naming the file) an image whose shorter side would be
            upsampled more than this many times to ``input_size``; ``null`` keeps every image. 4
            keeps every real radiograph (and 224-320 px downsampled sets) and refuses thumbnails
            under a quarter of ``input_size`` (56 px for 224).
    """

    name = "xray"
    files = "PNG/JPEG/TIFF or DICOM X-rays"

    def __init__(self, input_size: int = 224, frontal_only: bool = True, normalize: str = "none",
                 intensity: str = "auto", percentiles: tuple[float, float] = (0.5, 99.5),
                 crop_scale: tuple[float, float] = (0.2, 1.0), hflip: bool = True,
                 folder_labels: bool = False, verify: bool = False, on_error: str = "raise",
                 check_modality: bool = True, max_upsample: float | None = 4.0) -> None:
        self.set_image_options(input_size=input_size, normalize=normalize, crop_scale=crop_scale,
                               hflip=hflip, folder_labels=folder_labels, on_error=on_error,
                               max_upsample=max_upsample)
        self.frontal_only, self.verify = bool(frontal_only), bool(verify)
        self.check_modality = bool(check_modality)
        self.intensity = self.choice(intensity, "intensity", INTENSITY_MODES)
        self.percentiles = self.pair(percentiles, "percentiles", 0.0, 100.0)

    def demo_data(self, root: Path) -> Path:
        """Write ~40 synthetic chest PNGs, 3 DICOMs (one lateral) and ``labels.csv`` under ``root``."""
        from medkit_plugin_xray.demo import write_demo

        return write_demo(Path(root))

    def file_kind(self, path: Path) -> str | None:
        return file_kind(path)

    def side_tables(self, root: Path) -> dict[str, Table]:
        """Views and patients from ``metadata.csv`` when there is one."""
        if not (root / METADATA_CSV).is_file():
            return {}
        tables = {"views": read_table(root / METADATA_CSV, ("ViewPosition", "view"), optional=True),
                  "patients": read_table(root / METADATA_CSV, PATIENT_COLUMNS, optional=True)}
        return {k: t for k, t in tables.items() if t is not None}

    def entries_of(self, path: Path, rel: str, kind: str, index: Index) -> list[Entry2D]:
        header = probe(path, kind, verify=self.verify, check_modality=self.check_modality)
        view = (index.tables["views"].get(rel) if "views" in index.tables else None) or header.view
        if self.frontal_only and is_frontal(view) is False:
            index.filtered.append((rel, f"view {view!r} is not frontal (frontal_only=True)"))
            return []
        where = str(path) + (f', series "{header.description}"' if header.description else "")
        if self.upsampled(index, rel, where, (header.width, header.height)):
            return []
        patient = index.tables["patients"].get(rel) if "patients" in index.tables else None
        return [Entry2D(rel, rel, path, patient or rel, kind=header.kind, dicom=header.uids)]

    def select(self, entries: list[Entry2D], index: Index) -> list[Entry2D]:
        if index.filtered:
            log.info("xray: %d non-frontal images dropped from %s (set frontal_only=false to keep them)",
                     len(index.filtered), index.root)
        return entries

    def nothing_left(self, index: Index, skipped: int) -> str:
        first = f"; first skipped: {index.skipped[0][1]}" if index.skipped else ""
        return (f"no usable image left ({skipped} skipped: unreadable, not 2D or upsampled beyond max_upsample; "
                f"{len(index.filtered)} non-frontal); check the files or set frontal_only=false{first}")

    def work_side(self) -> int:
        """The edge an image is reduced to at least before its intensity scaling: the smallest
        RandomResizedCrop (``crop_scale[0]`` of the area) still has ``input_size`` source pixels
        across, so no view is upsampled more than the reference's resize-then-crop already does."""
        opts = self.options
        return math.ceil(opts.input_size / math.sqrt(max(float(opts.crop_scale[0]), 1e-6)))

    def read_image(self, entry: Entry2D) -> Image.Image:
        """Grey values in [0, 1] as a mode ``F`` image, reduced to at least :meth:`work_side` pixels
        per edge before the intensity scaling (a 2048² file for 224² views is scaled at 512²)."""
        return Image.fromarray(read_grey(entry.path, entry.kind, intensity=self.intensity,
                                         percentiles=self.percentiles, min_side=self.work_side()))
