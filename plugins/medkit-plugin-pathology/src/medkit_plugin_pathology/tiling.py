"""Tile grids, the saturation tissue test on thumbnails, and the seeded per-patient tile cap."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

#: Thumbnail pixels per tile edge used by the tissue test.
THUMB_PIXELS_PER_TILE = 32


@dataclass(frozen=True)
class Tile:
    """One tile: grid column/row and its pixel box ``(left, upper, right, lower)`` in the image."""

    col: int
    row: int
    box: tuple[int, int, int, int]


def _axis(length: int, tile: int) -> list[tuple[int, int]]:
    if length <= tile:
        return [(0, length)]
    return [(k * tile, (k + 1) * tile) for k in range(length // tile)]


def tile_grid(width: int, height: int, tile_size: int) -> list[Tile]:
    """Non-overlapping ``tile_size`` tiles of a ``width``×``height`` image, row-major.

    An image no larger than ``tile_size`` on both sides is one tile (the whole image). Otherwise
    only full tiles are cut: the ``size mod tile_size`` strip at the right and bottom edges is not
    used, and a side shorter than ``tile_size`` gives one tile spanning that side.
    """
    if width <= tile_size and height <= tile_size:
        return [Tile(0, 0, (0, 0, width, height))]
    cols, rows = _axis(width, tile_size), _axis(height, tile_size)
    return [Tile(c, r, (x0, y0, x1, y1)) for r, (y0, y1) in enumerate(rows) for c, (x0, x1) in enumerate(cols)]


def thumbnail_factor(width: int, height: int, tile_size: int) -> int:
    """Downsampling factor that leaves about :data:`THUMB_PIXELS_PER_TILE` pixels per tile edge."""
    edge = min(tile_size, max(width, height))
    return max(1, edge // THUMB_PIXELS_PER_TILE)


def tissue_mask(rgb: np.ndarray, saturation: float) -> np.ndarray:
    """``True`` where a pixel is tissue: HSV saturation ``(max - min) / max`` of its R, G, B above
    ``saturation``. White and grey background (and black) have saturation ≈ 0; H&E stains ≫ 0.07."""
    arr = rgb.astype(np.float32)
    high, low = arr.max(axis=-1), arr.min(axis=-1)
    sat = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    return sat > saturation


def tissue_fractions(thumb: Image.Image, size: tuple[int, int], tiles: Sequence[Tile],
                     saturation: float) -> list[float]:
    """Fraction of tissue pixels of every tile, measured on ``thumb`` (the image at reduced scale)."""
    mask = tissue_mask(np.asarray(thumb.convert("RGB")), saturation)
    th, tw = mask.shape
    sx, sy = tw / size[0], th / size[1]
    out = []
    for t in tiles:
        left, upper, right, lower = t.box
        x0, y0 = min(int(math.floor(left * sx)), tw - 1), min(int(math.floor(upper * sy)), th - 1)
        x1, y1 = max(x0 + 1, min(tw, int(math.ceil(right * sx)))), max(y0 + 1, min(th, int(math.ceil(lower * sy))))
        out.append(float(mask[y0:y1, x0:x1].mean()))
    return out


def _rank(seed: int, key: str) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def cap_per_group(keys: Sequence[str], groups: Sequence[str], limit: int, seed: int = 0) -> list[int]:
    """Indices kept when each group (patient) may keep at most ``limit`` items (``limit`` ≤ 0: all).

    The choice is a seeded random sample that depends only on ``seed`` and each item's key: the
    ``limit`` items with the smallest ``sha1(f"{seed}:{key}")`` are kept. It is reproducible on
    every machine and Python version, and does not change when other patients are added.
    """
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keep: set[int] = set()
    for idx in members.values():
        if limit <= 0 or len(idx) <= limit:
            keep.update(idx)
        else:
            keep.update(sorted(idx, key=lambda i: _rank(seed, keys[i]))[:limit])
    return sorted(keep)
