"""The ``pathology`` modality: images cut into tissue tiles, grouped and capped per patient."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from PIL import Image

from medkit.api import Entry2D, Image2DDataset, Image2DModality, Index, Table, check_edges, read_table
from medkit_plugin_pathology import wsi
from medkit_plugin_pathology.readers import file_kind, image_size, read_rgb, read_thumbnail
from medkit_plugin_pathology.tiling import cap_per_group, thumbnail_factor, tile_grid, tissue_fractions

log = logging.getLogger(__name__)

PATIENTS_CSV = "patients.csv"


#: A TCGA barcode's case part (project and participant), as in ``TCGA-A2-A0T2-01Z-00-DX1.svs``.
TCGA_CASE = re.compile(r"(?<![A-Za-z0-9])(TCGA-[A-Za-z0-9]{2}-[A-Za-z0-9]{4})(?![A-Za-z0-9])")


def tcga_case(rel: str) -> str | None:
    """The TCGA case id in a slide's file name (or folders), upper-cased; ``None`` when there is none."""
    match = TCGA_CASE.search(rel)
    return match.group(1).upper() if match else None


def folder_patient(rel: str, level: int) -> str:
    """Patient of an image from its folders: the path down to folder ``level`` (0 = first), or the
    image itself when it is not that deep."""
    folders = rel.split("/")[:-1]
    return "/".join(folders[:level + 1]) if len(folders) > level else rel


class PathologyDataset(Image2DDataset):
    """Pathology samples; ``data inspect`` lists the tiles kept per slide or image."""

    def describe(self) -> list[str]:
        per: dict[str, int] = {}
        for e in self.entries:
            per[e.rel] = per.get(e.rel, 0) + 1
        return [f"tiles of {rel}: {n}" for rel, n in sorted(per.items())]


class PathologyModality(Image2DModality):
    """RGB histology: whole-slide images (SVS, NDPI, MRXS, pyramidal TIFF, DICOM-WSI, through
    OpenSlide; see :mod:`medkit_plugin_pathology.wsi`), PNG/JPEG/TIFF tiles, or larger images cut into
    tiles; values in [0, 1].

    Sample ids are ``"<relative path>#x<col>_y<row>"``; a sample's source is its patient
    (``patients.csv``, else the TCGA case id in the file name, else the folder at ``patient_level``),
    so a split never divides a patient.
    ``dataset.stats`` counts images, tiles cut, background tiles dropped and tiles over the cap.

    Args:
        input_size: output edge; every tile is resized to ``input_size``².
        tile_size: images larger than this (either side) are cut into ``tile_size``² tiles.
        max_tiles_per_patient: seeded random cap per patient (MedCoSS: 100); 0 keeps all.
        tile_seed: seed of that choice (MedCoSS: 0).
        min_tissue: tiles whose tissue fraction is below this are dropped as background (0: off).
        tissue_saturation: a pixel is tissue when its HSV saturation exceeds this.
        patient_level: without ``patients.csv``, the folder level naming the patient (0 = first).
        folder_labels: without ``labels.csv``, the first folder level is the class.
        normalize: ``none`` ([0, 1], the MedCoSS convention), ``imagenet`` or ``zscore`` (per image).
        crop_scale: area range of the training RandomResizedCrop.
        hflip: random horizontal flip in training.
        on_error: ``raise`` (stop at the first bad file) or ``skip`` (log it, record it in
            ``dataset.skipped``).
        tile_mpp: whole-slide images: µm per pixel of a ``tile_size`` tile (0.5: 256 µm tiles at
            20×); tiles are read at the best pyramid level, never the whole slide.
        slide_mpp: µm per level-0 pixel of every slide, for slides whose header does not say it.
    """

    name = "pathology"
    files = "whole-slide images or PNG/JPEG/TIFF images"
    dataset_class = PathologyDataset
    folder_labels_need_all = True

    def __init__(self, input_size: int = 224, tile_size: int = 512, max_tiles_per_patient: int = 100,
                 tile_seed: int = 0, min_tissue: float = 0.25, tissue_saturation: float = 0.07,
                 patient_level: int = 0, folder_labels: bool = True, normalize: str = "none",
                 crop_scale: tuple[float, float] = (0.2, 1.0), hflip: bool = True,
                 on_error: str = "raise", tile_mpp: float = 0.5, slide_mpp: float | None = None) -> None:
        self.set_image_options(input_size=input_size, normalize=normalize, crop_scale=crop_scale,
                               hflip=hflip, folder_labels=folder_labels, on_error=on_error)
        self.tile_size = int(self.number(tile_size, "tile_size", 1))
        self.max_tiles_per_patient = int(self.number(max_tiles_per_patient, "max_tiles_per_patient", 0))
        self.tile_seed = int(tile_seed)
        self.min_tissue = self.number(min_tissue, "min_tissue", 0.0, 1.0)
        self.tissue_saturation = self.number(tissue_saturation, "tissue_saturation", 0.0, 1.0)
        self.patient_level = int(self.number(patient_level, "patient_level", 0))
        self.tile_mpp = self.number(tile_mpp, "tile_mpp", 1e-3)
        self.slide_mpp = None if slide_mpp is None else self.number(slide_mpp, "slide_mpp", 1e-3)
        self._slide_tiles: dict[str, wsi.TileRef] = {}  # sample id -> where to read it in its slide

    def demo_data(self, root: Path) -> Path:
        """Write synthetic H&E-like slides and tiles in two class folders under ``root``."""
        from medkit_plugin_pathology.demo import write_demo

        return write_demo(Path(root))

    def file_kind(self, path: Path) -> str | None:
        return "slide" if wsi.split_slides([path])[0] else file_kind(path)

    def side_tables(self, root: Path) -> dict[str, Table]:
        table = read_table(root / PATIENTS_CSV, ("patient", "patient_id")) \
            if (root / PATIENTS_CSV).is_file() else None
        return {} if table is None else {"patients": table}

    def entries_of(self, path: Path, rel: str, kind: str, index: Index) -> list[Entry2D]:
        """The tissue tiles of one image: grid from the header, tissue test on a thumbnail (for a
        whole-slide image: on a low-resolution pyramid level)."""
        patient = (index.tables["patients"].get(rel) if "patients" in index.tables else None) \
            or tcga_case(rel) or folder_patient(rel, self.patient_level)
        if kind == "slide":
            return self._slide_entries(path, rel, patient, index)
        width, height = image_size(path, kind)
        check_edges(path, (width, height), "image")
        grid = tile_grid(width, height, self.tile_size)
        if self.min_tissue <= 0:
            fractions = [1.0] * len(grid)
        else:
            thumb, size = read_thumbnail(path, thumbnail_factor(width, height, self.tile_size))
            fractions = tissue_fractions(thumb, size, grid, self.tissue_saturation)
        stats = index.stats
        for key in ("images", "tiles", "background"):
            stats.setdefault(key, 0)
        kept = [t for t, f in zip(grid, fractions) if f >= self.min_tissue]
        stats["images"] += 1
        stats["tiles"] += len(grid)
        stats["background"] += len(grid) - len(kept)
        return [Entry2D(f"{rel}#x{t.col}_y{t.row}", rel, path, patient,
                        (float(t.box[0]), float(t.box[1]), float(t.box[2]), float(t.box[3]))) for t in kept]

    def _slide_entries(self, path: Path, rel: str, patient: str, index: Index) -> list[Entry2D]:
        seen: set[str] = index.__dict__.setdefault("slides_seen", set())
        key = wsi.series_key(path)  # the files of one DICOM-WSI series are one slide
        if key in seen:
            return []
        seen.add(key)
        refs, grid = wsi.slide_tiles(path, rel, tile_size=self.tile_size, tile_mpp=self.tile_mpp,
                                     slide_mpp=self.slide_mpp, min_tissue=self.min_tissue,
                                     saturation=self.tissue_saturation, patient=patient)
        for key in ("images", "tiles", "background"):
            index.stats.setdefault(key, 0)
        index.stats["images"] += 1
        index.stats["tiles"] += grid
        index.stats["background"] += grid - len(refs)
        self._slide_tiles.update({r.id: r for r in refs})
        return [Entry2D(r.id, rel, path, patient, None, kind="region") for r in refs]

    def select(self, entries: list[Entry2D], index: Index) -> list[Entry2D]:
        """At most ``max_tiles_per_patient`` tiles per patient (a seeded choice)."""
        kept = cap_per_group([e.id for e in entries], [e.source for e in entries],
                             self.max_tiles_per_patient, self.tile_seed)
        index.stats["over_cap"] = len(entries) - len(kept)
        return [entries[i] for i in kept]

    def nothing_left(self, index: Index, skipped: int) -> str:
        background = index.stats.get("background", 0)
        # lowering min_tissue only helps when tiles were dropped as background, not when every file
        # was skipped (unreadable, smaller than one tile, tile_mpp finer than the slide): say so
        advice = "lower modality.pathology.min_tissue or check the files" if background else \
            "no tile was dropped as background, so min_tissue is not the cause: see each skipped file's reason"
        return (f"no tissue tile left ({index.stats.get('images', 0)} images, "
                f"{background} background tiles below min_tissue={self.min_tissue}, "
                f"{skipped} files skipped); {advice}")

    def read_image(self, entry: Entry2D) -> Image.Image:
        if entry.kind == "region":
            return wsi.read_tile(self._slide_tiles[entry.id])
        return read_rgb(entry.path)

    def dataset(self, data: Path, *, train: bool) -> Image2DDataset:
        """Index the images under ``data`` into tissue tiles; ``dataset.patients`` = ``sources``."""
        ds = super().dataset(data, train=train)
        ds.patients = ds.sources  # type: ignore[attr-defined]  # read by the patient-level split
        return ds
