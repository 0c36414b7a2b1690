"""Indexing of a pathology folder into tissue tiles (patients, labels, cap) and loading of samples."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from medkit.api.batch import TrainViewMixin
from medkit.api.errors import DataError
from medkit.data.image2d import make_view, normalize, to_tensor
from medkit.data.tables import encode_labels, read_table
from medkit.data.checks import check_edges
from medkit_plugin_pathology import wsi
from medkit_plugin_pathology.readers import file_kind, image_size, read_rgb, read_thumbnail
from medkit_plugin_pathology.tiling import cap_per_group, thumbnail_factor, tile_grid, tissue_fractions

log = logging.getLogger(__name__)

LABELS_CSV = "labels.csv"
PATIENTS_CSV = "patients.csv"


@dataclass(frozen=True)
class PathologyOptions:
    """The validated options of :class:`~medkit_plugin_pathology.modality.PathologyModality`."""

    input_size: int = 224
    tile_size: int = 512
    max_tiles_per_patient: int = 100
    tile_seed: int = 0
    min_tissue: float = 0.25
    tissue_saturation: float = 0.07
    patient_level: int = 0
    folder_labels: bool = True
    normalize: str = "none"
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: bool = True
    on_error: str = "raise"
    tile_mpp: float = 0.5  # whole-slide images: µm/px of a tile_size tile (see wsi.py)
    slide_mpp: float | None = None  # override of a slide's µm/px


@dataclass(frozen=True)
class TileEntry:
    """One sample: a tile of an image (or the whole image when it is no larger than a tile)."""

    rel: str  # image path relative to the data root (posix)
    path: Path
    col: int
    row: int
    box: tuple[int, int, int, int]
    patient: str
    tissue: float

    @property
    def id(self) -> str:
        return f"{self.rel}#x{self.col}_y{self.row}"


def list_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, sorted, skipping hidden files and folders."""
    out = [p for p in root.rglob("*")
           if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def folder_patient(rel: str, level: int) -> str:
    """Patient of an image from its folders: the path down to folder ``level`` (0 = first), or the
    image itself when it is not that deep."""
    folders = rel.split("/")[:-1]
    return "/".join(folders[:level + 1]) if len(folders) > level else rel


class PathologyDataset(TrainViewMixin):
    """Pathology samples ``{"input": [3, S, S] float32 RGB, "id": "<path>#x<col>_y<row>", "label"}``.

    Attributes:
        ids: ``"<relative path>#x<col>_y<row>"`` of every tile kept.
        labels: one int per tile (``-1`` unlabelled), or ``None`` without labels.
        class_names: names of the label values, or ``None``.
        patients: patient id of every tile.
        skipped: ``(file, reason)`` of files skipped with ``on_error="skip"``.
        stats: counts of images, tiles cut, background tiles dropped and tiles over the patient cap.
    """

    def __init__(self, root: Path, entries: list[TileEntry], labels: list[int] | None,
                 class_names: list[str] | None, options: PathologyOptions, train: bool,
                 skipped: list[tuple[str, str]], stats: dict[str, int]) -> None:
        self.root, self.entries, self.options, self.train = root, entries, options, train
        self.ids = [e.id for e in entries]
        self.patients = [e.patient for e in entries]
        self.labels, self.class_names = labels, class_names
        self.skipped, self.stats = skipped, stats
        self._cache: tuple[Path, Image.Image] | None = None  # last decoded image (tiles come in order)

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None  # never ship a decoded image to DataLoader workers
        return state

    def describe(self) -> list[str]:
        per = {}
        for e in self.entries:
            per[e.rel] = per.get(e.rel, 0) + 1
        return [f"tiles of {rel}: {n}" for rel, n in sorted(per.items())]

    def _image(self, path: Path) -> Image.Image:
        if self._cache is None or self._cache[0] != path:
            self._cache = (path, read_rgb(path))
        return self._cache[1]

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Tile ``index`` resized to ``input_size``²: un-augmented with ``seed=None`` or when not
        training, otherwise a RandomResizedCrop within the tile + flip drawn only from ``seed``."""
        entry, opts = self.entries[index], self.options
        img = wsi.read_tile(entry) if isinstance(entry, wsi.TileRef) else self._image(entry.path)
        gen = torch.Generator().manual_seed(int(seed)) if self.train and seed is not None else None
        box = (0.0, 0.0, float(img.width), float(img.height)) if isinstance(entry, wsi.TileRef) else \
            tuple(float(v) for v in entry.box)
        view = make_view(img, box, opts.input_size, gen, crop_scale=opts.crop_scale, hflip=opts.hflip)
        sample: dict[str, Any] = {"input": normalize(to_tensor(view), opts.normalize), "id": entry.id}
        if self.labels is not None:
            sample["label"] = self.labels[index]
        return sample


def build_dataset(data: Path, options: PathologyOptions, *, train: bool) -> PathologyDataset:
    """Index ``data`` (a folder, or one file): tile grid from each header, tissue test on a
    thumbnail, per-patient cap.

    Raises:
        DataError: for a missing or empty folder, a bad side table, (``on_error="raise"``) the first
            unreadable or non-2D file, or when no tissue tile is left.
    """
    data = Path(data).expanduser()
    if not data.exists():
        raise DataError(f"pathology data {data} does not exist; pass --data a folder of tiles or slides")
    root, files = (data.parent, [data]) if data.is_file() else (data, list_files(data))
    if not files:
        raise DataError(f"pathology data folder {root} is empty; expected PNG/JPEG/TIFF images "
                        f"(see the medkit-plugin-pathology README for the layout)")
    patient_table = read_table(root / PATIENTS_CSV, ("patient", "patient_id")) \
        if (root / PATIENTS_CSV).is_file() else None
    tiles: list[TileEntry] = []
    skipped: list[tuple[str, str]] = []
    stats = {"images": 0, "tiles": 0, "background": 0, "over_cap": 0}
    slides, files = wsi.split_slides(files)
    refs, skipped, grids = wsi.index_slides(
        slides, root, on_error=options.on_error, tile_size=options.tile_size, tile_mpp=options.tile_mpp,
        slide_mpp=options.slide_mpp, min_tissue=options.min_tissue, saturation=options.tissue_saturation)
    tiles.extend(wsi.with_patient(refs, lambda rel: (patient_table.get(rel) if patient_table is not None
                                                     else None) or folder_patient(rel, options.patient_level)))
    stats["images"], stats["tiles"] = len(grids), sum(grids.values())
    stats["background"] = stats["tiles"] - len(refs)
    candidates = len(slides)
    for path in files:
        kind = file_kind(path)
        if kind is None:
            continue
        candidates += 1
        rel = path.relative_to(root).as_posix()
        try:
            found = _tiles_of(path, rel, kind, options)
        except DataError as exc:
            if options.on_error == "raise":
                raise
            log.warning("pathology: skipping %s: %s", rel, exc)
            skipped.append((rel, str(exc)))
            continue
        stats["images"] += 1
        patient = (patient_table.get(rel) if patient_table is not None else None) \
            or folder_patient(rel, options.patient_level)
        for tile, fraction in found:
            stats["tiles"] += 1
            if fraction < options.min_tissue:
                stats["background"] += 1
                continue
            tiles.append(TileEntry(rel, path, tile.col, tile.row, tile.box, patient, fraction))
    if candidates == 0:
        raise DataError(f"pathology data folder {root} has no PNG/JPEG/TIFF images among its "
                        f"{len(files)} files (it is empty of supported images); see the README")
    kept = cap_per_group([t.id for t in tiles], [t.patient for t in tiles],
                         options.max_tiles_per_patient, options.tile_seed)
    stats["over_cap"] = len(tiles) - len(kept)
    entries = [tiles[i] for i in kept]
    if not entries:
        raise DataError(f"pathology data folder {root}: no tissue tile left ({stats['images']} images, "
                        f"{stats['background']} background tiles below min_tissue={options.min_tissue}, "
                        f"{len(skipped)} files skipped); lower modality.pathology.min_tissue or check the files")
    log.info("pathology: %d tiles from %d images in %s (%d background, %d over the %d-per-patient cap)",
             len(entries), stats["images"], root, stats["background"], stats["over_cap"],
             options.max_tiles_per_patient)
    labels, names = _labels(root, entries, options)
    return PathologyDataset(root, entries, labels, names, options, train, skipped, stats)


def _tiles_of(path: Path, rel: str, kind: str, options: PathologyOptions) -> list[tuple[Any, float]]:
    """The tile grid of one image with each tile's tissue fraction (1.0 when the test is off)."""
    width, height = image_size(path, kind)
    check_edges(path, (width, height), "image")
    grid = tile_grid(width, height, options.tile_size)
    if options.min_tissue <= 0:
        return [(t, 1.0) for t in grid]
    thumb, size = read_thumbnail(path, thumbnail_factor(width, height, options.tile_size))
    return list(zip(grid, tissue_fractions(thumb, size, grid, options.tissue_saturation)))


def _labels(root: Path, entries: list[TileEntry],
            options: PathologyOptions) -> tuple[list[int] | None, list[str] | None]:
    """Labels from ``labels.csv`` (``path`` + ``label``), else from the first folder level when
    ``folder_labels`` and every image sits in a folder, else none."""
    if (root / LABELS_CSV).is_file():
        table = read_table(root / LABELS_CSV, ("label", "class"))
        values = [table.get(e.rel) for e in entries]
    elif options.folder_labels and all("/" in e.rel for e in entries):
        values = [e.rel.split("/", 1)[0] for e in entries]
    else:
        return None, None
    return encode_labels(values)
