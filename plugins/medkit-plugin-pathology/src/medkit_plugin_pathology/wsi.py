"""Whole-slide images through OpenSlide: header index, low-resolution tissue test, seeded tiles, tile cache."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image

from medkit.api import DataError
from medkit_plugin_pathology.tiling import THUMB_PIXELS_PER_TILE, Tile, cap_per_group, tissue_fractions

log = logging.getLogger(__name__)

#: Formats only OpenSlide reads; ``.tif``/``.tiff``/``.dcm`` are slides only when OpenSlide
#: recognises a pyramid (a tiled TIFF, a DICOM-WSI series), else they stay ordinary images.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".svslide", ".bif")
MAYBE_SLIDE_SUFFIXES = (".tif", ".tiff", ".dcm")
#: Micrometres per pixel of a tile before it is resized to ``input_size``: 512 px at 0.5 µm/px (20×)
#: is a 256 µm field, the usual TCGA tile that the reference's 512→224 pipeline starts from.
DEFAULT_TILE_MPP = 0.5
#: Tiles of decoded RGB kept in memory per process (LRU, bytes).
TILE_CACHE_BYTES = 256 << 20
#: Largest level (pixels) decoded whole for the tissue test; larger ones are read in strips.
_STRIP = 4096
_FIX = "replace or remove the slide, or set modality.pathology.on_error=skip to skip such files"
_TIFF_UNIT_UM = {"centimeter": 1e4, "inch": 25400.0, "millimeter": 1e3}
#: How much finer than the slide's own µm/px a tile may be read (scanners round their nominal
#: resolution: 0.2527 µm/px slides are read at tile_mpp 0.25) before the slide is refused.
MPP_TOLERANCE = 0.1
_SOURCE_NAMES = {"openslide.mpp-x": "OpenSlide property openslide.mpp-x",
                 "tiff resolution": "TIFF tags tiff.XResolution / tiff.ResolutionUnit",
                 "override": "modality.pathology.slide_mpp"}


@dataclass(frozen=True)
class SlideInfo:
    """What the header of one slide says (no pixel is decoded to learn it)."""

    path: Path
    vendor: str
    dimensions: tuple[tuple[int, int], ...]  # (width, height) of every level
    downsamples: tuple[float, ...]
    mpp: float  # µm per level-0 pixel (x)
    mpp_source: str  # "openslide.mpp-x", "tiff resolution" or "override"


@dataclass(frozen=True)
class TileRef:
    """One tile of a slide (the pathology modality keeps one per sample id and reads it on demand).

    ``col``/``row`` are the tile's level-0 pixel coordinates (``x``/``y``) so that the sample id
    ``"<slide>#x<x>_y<y>"`` locates the tile in any viewer; ``box`` is its level-0 box.
    """

    rel: str
    path: Path
    col: int
    row: int
    box: tuple[int, int, int, int]
    patient: str
    tissue: float
    level: int = 0
    read_size: tuple[int, int] = (0, 0)  # pixels read at ``level``

    @property
    def id(self) -> str:
        return f"{self.rel}#x{self.col}_y{self.row}"


def _openslide() -> Any:
    try:
        import openslide
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DataError("whole-slide images need OpenSlide: pip install openslide-python openslide-bin") from exc
    return openslide


def slide_format(path: Path) -> str | None:
    """OpenSlide's vendor name for ``path`` (``"aperio"``, ``"generic-tiff"``, ``"dicom"``...), or
    ``None`` when it is not a slide OpenSlide reads (a plain PNG/JPEG, a stripped TIFF)."""
    name = path.name.lower()
    if not (name.endswith(SLIDE_SUFFIXES) or name.endswith(MAYBE_SLIDE_SUFFIXES)):
        return None
    try:
        return _openslide().OpenSlide.detect_format(str(path))
    except Exception:  # noqa: BLE001 - detection failures mean "not a slide"
        return None if not name.endswith(SLIDE_SUFFIXES) else "unknown"


def split_slides(files: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """``(slides, other files)``: files OpenSlide reads as pyramids (known slide suffixes always
    count, so that an unreadable ``.svs`` is reported rather than ignored)."""
    slides: list[Path] = []
    rest: list[Path] = []
    for p in files:
        (slides if slide_format(p) is not None or p.name.lower().endswith(SLIDE_SUFFIXES) else rest).append(p)
    return slides, rest


def _open(path: Path) -> Any:
    osl = _openslide()
    try:
        return osl.OpenSlide(str(path))
    except Exception as exc:  # OpenSlideError, unsupported formats, IO errors
        raise DataError(f"{path}: cannot open this whole-slide image ({type(exc).__name__}: {exc}); {_FIX}") from exc


def _tiff_mpp(props: Any) -> float | None:
    unit = str(props.get("tiff.ResolutionUnit", "")).lower()
    res = props.get("tiff.XResolution")
    if unit not in _TIFF_UNIT_UM or res in (None, ""):
        return None
    try:
        ppu = float(res)
    except ValueError:
        return None
    return _TIFF_UNIT_UM[unit] / ppu if ppu > 0 else None


def slide_info(path: Path, slide_mpp: float | None = None) -> SlideInfo:
    """Levels and µm/px of ``path`` from its header.

    µm/px comes from ``slide_mpp`` when given, else ``openslide.mpp-x``, else the TIFF resolution
    tags (with a unit). Raises:
        DataError: naming the slide when it cannot be opened or its resolution is unknown.
    """
    slide = _open(path)
    try:
        props = slide.properties
        vendor = str(props.get("openslide.vendor", "unknown"))
        mpp: float | None
        if slide_mpp is not None:
            mpp, source = float(slide_mpp), "override"
        elif props.get("openslide.mpp-x") not in (None, ""):
            mpp, source = float(props["openslide.mpp-x"]), "openslide.mpp-x"
            if vendor == "generic-tiff" and _tiff_mpp(props) is not None:
                source = "tiff resolution"  # OpenSlide derives mpp-x of a plain TIFF from these tags
        else:
            mpp, source = _tiff_mpp(props), "tiff resolution"
        if mpp is None or not math.isfinite(mpp) or mpp <= 0:
            raise DataError(f"{path}: the slide's resolution (µm per pixel) is unknown: no openslide.mpp-x "
                            f"and no TIFF resolution with a unit; state it with "
                            f"modality.pathology.slide_mpp=<µm/px> (e.g. 0.25 at 40×, 0.5 at 20×)")
        log.info("%s: %.4g µm per level-0 pixel, from %s", path, mpp, _SOURCE_NAMES.get(source, source))
        return SlideInfo(Path(path), vendor, tuple((int(w), int(h)) for w, h in slide.level_dimensions),
                         tuple(float(d) for d in slide.level_downsamples), mpp, source)
    finally:
        slide.close()


def check_tile_mpp(path: Path, info: SlideInfo, tile_mpp: float) -> None:
    """Refuse a ``tile_mpp`` finer than the slide's own resolution by more than :data:`MPP_TOLERANCE`:
    every tile would be upsampled from fewer pixels than it has (a 300-pixel slide at 352.8 µm/px
    read at 0.5 µm/px gives tiles of 1/700 of one pixel: solid colour).

    Raises:
        DataError: naming the slide, its µm/px and where that came from, and a setting to use.
    """
    if tile_mpp >= info.mpp * (1.0 - MPP_TOLERANCE):
        return
    suggest = float(f"{info.mpp:.3g}")
    suggest = suggest if suggest >= info.mpp * (1.0 - MPP_TOLERANCE) else info.mpp
    raise DataError(f"{path}: tile_mpp={tile_mpp:g} µm/px is finer than the slide's own resolution, "
                    f"{info.mpp:.4g} µm/px ({_SOURCE_NAMES.get(info.mpp_source, info.mpp_source)}): every tile "
                    f"would be upsampled {info.mpp / tile_mpp:.3g}× from pixels that are not there; set "
                    f"modality.pathology.tile_mpp={suggest:g} (or coarser) for slides like this one, state the "
                    f"right resolution with modality.pathology.slide_mpp if the header is wrong, or remove the "
                    f"slide (on_error=skip skips it)")


def best_level(info: SlideInfo, downsample: float) -> int:
    """The level read for ``downsample`` (level-0 pixels per output pixel): the coarsest level that
    is not coarser than asked (OpenSlide's ``get_best_level_for_downsample`` rule)."""
    fine = [level for level, d in enumerate(info.downsamples) if d <= downsample * (1 + 1e-6)]
    return max(fine, key=lambda level: info.downsamples[level]) if fine else 0


def _rgb(region: Image.Image) -> Image.Image:
    """OpenSlide's premultiplied RGBA (transparent outside the scanned area) on white."""
    if region.mode != "RGBA":
        return region.convert("RGB")
    background = Image.new("RGBA", region.size, (255, 255, 255, 255))
    background.alpha_composite(region)
    return background.convert("RGB")


def _low_res(slide: Any, info: SlideInfo, factor: float) -> tuple[Image.Image, int]:
    """The slide about ``factor`` times smaller than level 0, read from the coarsest level that is
    fine enough (in strips, so that memory stays bounded), and the level used."""
    level = best_level(info, factor)
    width, height = info.dimensions[level]
    rest = max(1, int(factor / info.downsamples[level]))
    scale = info.downsamples[level]
    out = Image.new("RGB", (max(1, width // rest), max(1, height // rest)), (255, 255, 255))
    step = max(rest, (_STRIP // rest) * rest)
    for y in range(0, height, step):
        for x in range(0, width, step):
            w, h = min(step, width - x), min(step, height - y)
            part = _rgb(slide.read_region((int(x * scale), int(y * scale)), level, (w, h)))
            if rest > 1:
                part = part.reduce(rest)
            out.paste(part, (x // rest, y // rest))
    return out, level


def tile_grid0(info: SlideInfo, tile0: int) -> list[Tile]:
    """Non-overlapping ``tile0``-pixel tiles of level 0, row-major, full tiles only."""
    width, height = info.dimensions[0]
    return [Tile(x, y, (x, y, x + tile0, y + tile0))
            for y in range(0, height - tile0 + 1, tile0) for x in range(0, width - tile0 + 1, tile0)]


def slide_tiles(path: Path, rel: str, *, tile_size: int = 512, tile_mpp: float = DEFAULT_TILE_MPP,
                slide_mpp: float | None = None, min_tissue: float = 0.25, saturation: float = 0.07,
                max_tiles: int = 0, seed: int = 0, patient: str | None = None) -> tuple[list[TileRef], int]:
    """The tissue tiles of one slide and the number of tiles in its grid.

    A tile covers ``tile_size * tile_mpp`` µm; tissue is measured on a low-resolution level with
    the tile filter's criterion (:func:`~medkit_plugin_pathology.tiling.tissue_fractions`);
    at most ``max_tiles`` tiles (0: all) are kept, a seeded choice that depends only on ``seed``
    and the tile ids. Raises:
        DataError: naming the slide (unreadable, unknown resolution, smaller than one tile).
    """
    info = slide_info(path, slide_mpp)
    check_tile_mpp(path, info, tile_mpp)
    tile0 = max(1, int(round(tile_size * tile_mpp / info.mpp)))
    width, height = info.dimensions[0]
    if width < tile0 or height < tile0:
        raise DataError(f"{path}: the slide ({width}×{height} px at {info.mpp:.4g} µm/px) is smaller than one "
                        f"tile of {tile_size} px at {tile_mpp:g} µm/px ({tile0} px); lower "
                        f"modality.pathology.tile_size or tile_mpp, or remove the slide")
    grid = tile_grid0(info, tile0)
    level = best_level(info, tile0 / tile_size)
    read = max(1, int(round(tile0 / info.downsamples[level])))
    if min_tissue > 0:
        slide = _open(path)
        try:
            thumb, _ = _low_res(slide, info, max(1.0, tile0 / THUMB_PIXELS_PER_TILE))
        except DataError:
            raise
        except Exception as exc:  # a damaged tile in the low-resolution level
            raise DataError(f"{path}: cannot decode the slide's low-resolution level "
                            f"({type(exc).__name__}: {exc}); {_FIX}") from exc
        finally:
            slide.close()
        fractions = tissue_fractions(thumb, info.dimensions[0], grid, saturation)
    else:
        fractions = [1.0] * len(grid)
    who = patient if patient is not None else rel
    refs = [TileRef(rel, Path(path), t.col, t.row, t.box, who, f, level, (read, read))
            for t, f in zip(grid, fractions) if f >= min_tissue]
    if max_tiles > 0 and len(refs) > max_tiles:
        keep = cap_per_group([r.id for r in refs], [rel] * len(refs), max_tiles, seed)
        refs = [refs[i] for i in keep]
    return refs, len(grid)


def series_key(path: Path) -> str:
    """DICOM-WSI files of one pyramid (one per level) open as one slide: key them by series."""
    if path.suffix.lower() != ".dcm":
        return str(path)
    try:
        slide = _openslide().OpenSlide(str(path))
    except Exception:  # noqa: BLE001 - reported when indexed
        return str(path)
    try:
        return f"{path.parent}::{slide.properties.get('dicom.SeriesInstanceUID', path.name)}"
    finally:
        slide.close()


def index_slides(paths: Sequence[Path], root: Path, *, on_error: str = "raise", patients: dict[str, str] | None = None,
                 **options: Any) -> tuple[list[TileRef], list[tuple[str, str]], dict[str, int]]:
    """Tile every slide of ``paths`` (relative ids against ``root``); see :func:`slide_tiles`.

    DICOM-WSI files of one series are indexed once, under the first file's name. Returns:
        (tiles, skipped ``(file, reason)`` with ``on_error="skip"``, grid tiles per slide id).
    """
    seen: set[str] = set()
    refs: list[TileRef] = []
    skipped: list[tuple[str, str]] = []
    grids: dict[str, int] = {}
    for path in sorted(paths, key=lambda p: p.as_posix()):
        key = series_key(path)
        if key in seen:
            continue
        seen.add(key)
        rel = path.relative_to(root).as_posix()
        try:
            found, grid = slide_tiles(path, rel, patient=(patients or {}).get(rel), **options)
        except DataError as exc:
            if on_error != "skip":
                raise
            log.warning("pathology: skipping %s: %s", rel, exc)
            skipped.append((rel, str(exc)))
            continue
        refs.extend(found)
        grids[rel] = grid
    return refs, skipped, grids


class TileReader:
    """Reads tiles with ``read_region`` at their level (never a whole slide), keeping open slides
    and decoded tiles in small per-process LRUs. Picklable: the caches are dropped on pickling."""

    def __init__(self, max_bytes: int = TILE_CACHE_BYTES, max_open: int = 8) -> None:
        self.max_bytes, self.max_open = int(max_bytes), int(max_open)
        self.reads = 0
        self._reset()

    def _reset(self) -> None:
        self._slides: OrderedDict[str, Any] = OrderedDict()
        self._tiles: OrderedDict[tuple[Any, ...], Image.Image] = OrderedDict()
        self._bytes = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes, "max_open": self.max_open, "reads": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def _slide(self, path: Path) -> Any:
        key = str(path)
        if key in self._slides:
            self._slides.move_to_end(key)
            return self._slides[key]
        slide = _open(path)
        self._slides[key] = slide
        while len(self._slides) > self.max_open:
            self._slides.popitem(last=False)[1].close()
        return slide

    def read(self, ref: TileRef) -> Image.Image:
        """The RGB tile of ``ref`` at its level's resolution (``read_size``); raises DataError naming it."""
        key = (str(ref.path), ref.col, ref.row, ref.level, ref.read_size)
        img = self._tiles.get(key)
        if img is not None:
            self._tiles.move_to_end(key)
            return img
        try:
            region = self._slide(ref.path).read_region((ref.col, ref.row), ref.level, ref.read_size)
            img = _rgb(region)
        except DataError:
            raise
        except Exception as exc:  # a damaged tile
            raise DataError(f"{ref.path}: cannot decode tile {ref.id} ({type(exc).__name__}: {exc}); {_FIX}") from exc
        self.reads += 1
        size = img.width * img.height * 3
        if 0 < size <= self.max_bytes:
            self._tiles[key] = img
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._tiles.popitem(last=False)
                self._bytes -= old.width * old.height * 3
        return img


_READER = TileReader()


def read_tile(ref: TileRef, size: int | None = None) -> Image.Image:
    """``ref`` as an RGB image (through the process-wide :class:`TileReader`), resized to ``size``²
    when given (bicubic, one resampling)."""
    img = _READER.read(ref)
    return img if size is None or img.size == (size, size) else img.resize((size, size), Image.Resampling.BICUBIC)


def with_patient(refs: Sequence[TileRef], patient_of: Any) -> list[TileRef]:
    """``refs`` with ``patient`` set to ``patient_of(rel)`` (the dataset's patient rule)."""
    return [replace(r, patient=patient_of(r.rel)) for r in refs]
