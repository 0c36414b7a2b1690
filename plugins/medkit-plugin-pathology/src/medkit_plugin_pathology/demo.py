"""Deterministic synthetic demo data: H&E-like RGB slides and tiles in two class folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medkit.api import demo_is_current, mark_demo, save_image, write_csv

DEMO_VERSION = 1
PATIENTS = "patients.csv"
CLASSES = ("normal", "tumor")
SLIDE_SIZE = 1024
TILE_SIZE = 224
WHITE = np.array([246.0, 244.0, 247.0])
EOSIN = np.array([234.0, 168.0, 204.0])


def _soft_ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return np.clip((1.0 - r) / 0.05 + 0.5, 0.0, 1.0)


def _upsample(field: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear upsampling of a smooth low-resolution field (fast synthesis of large images)."""
    img = Image.fromarray(field.astype(np.float32))
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)


def slide_mask(seed: int, size: int) -> np.ndarray:
    """An L-shaped tissue region over the upper and left halves: one quadrant stays white."""
    rng = np.random.default_rng(seed)
    low = max(8, size // 8)
    yy, xx = np.mgrid[0:1:low * 1j, 0:1:low * 1j]
    mask = np.maximum(_soft_ellipse(xx, yy, 0.5, 0.27, 0.48, 0.25 + rng.uniform(-0.02, 0.02)),
                      _soft_ellipse(xx, yy, 0.27, 0.5, 0.25 + rng.uniform(-0.02, 0.02), 0.48))
    if rng.random() < 0.5:  # vary which quadrant is empty: bottom-right or bottom-left
        mask = mask[:, ::-1]
    return np.clip(_upsample(np.ascontiguousarray(mask), size, size), 0.0, 1.0)


def he_image(seed: int, width: int, height: int, *, tumor: bool, mask: np.ndarray | None = None) -> np.ndarray:
    """An H&E-like ``[height, width, 3]`` uint8 image: pink stroma where ``mask`` (default: all)
    with purple nuclei; ``tumor`` nuclei are larger, darker and denser."""
    rng = np.random.default_rng(seed)
    mask = np.ones((height, width)) if mask is None else mask
    low_w, low_h = max(8, width // 8), max(8, height // 8)
    yy, xx = np.mgrid[0:low_h, 0:low_w] / float(max(low_w, low_h))
    shade = sum(rng.uniform(4, 9) * np.sin(2 * np.pi * (rng.uniform(1, 4) * xx * np.cos(a) + rng.uniform(1, 4)
                                                         * yy * np.sin(a)) + rng.uniform(0, 6.28))
                for a in rng.uniform(0, np.pi, 3))
    shade = _upsample(shade, width, height)
    m = mask.astype(np.float32)[..., None]
    tint = np.array([0.6, 1.0, 0.8], dtype=np.float32)
    stroma = EOSIN.astype(np.float32) + shade.astype(np.float32)[..., None] * tint
    img = WHITE.astype(np.float32) + (stroma - WHITE.astype(np.float32)) * m + np.float32(0.5)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))  # values ≥ 0: +0.5 then truncate rounds
    draw = ImageDraw.Draw(canvas)
    density = 1.6e-3 if tumor else 0.5e-3  # nuclei per pixel of tissue
    r_low, r_high = (5.0, 9.0) if tumor else (2.5, 4.5)
    colour = (72, 36, 122) if tumor else (104, 62, 152)
    for _ in range(int(density * float(mask.sum()))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        if mask[min(int(y), height - 1), min(int(x), width - 1)] < 0.5:
            continue
        rx, ry = rng.uniform(r_low, r_high), rng.uniform(r_low, r_high)
        jitter = tuple(int(c + rng.integers(-12, 13)) for c in colour)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=jitter)
    return np.asarray(canvas)


def write_demo(root: Path) -> Path:
    """Write the demo data under ``root`` once (a marker file records completion) and return it.

    Layout: ``<class>/<patient>_slide.{png,tif}`` (1024² slides, tiled into 2×2 tiles of 512 with
    one empty quadrant), ``<class>/<patient>_tile<k>.{jpg,png}`` (224² tiles), one blank tile that
    the tissue test drops, and ``patients.csv`` (path, patient). Classes come from the folders.
    """
    root = Path(root)
    if demo_is_current(root, DEMO_VERSION):
        return root
    rows: list[tuple[str, str]] = []
    for c, cls in enumerate(CLASSES):
        for p in range(2):
            patient = f"{cls[0].upper()}{p + 1:02d}"
            seed = 100 * c + 10 * p
            slide = he_image(seed, SLIDE_SIZE, SLIDE_SIZE, tumor=cls == "tumor", mask=slide_mask(seed, SLIDE_SIZE))
            name = f"{patient}_slide.png" if p == 0 else f"{patient}_slide.tif"
            _save(root / cls / name, slide)
            rows.append((f"{cls}/{name}", patient))
            for k in range(3):
                tile = he_image(seed + k + 1, TILE_SIZE, TILE_SIZE, tumor=cls == "tumor")
                name = f"{patient}_tile{k}.jpg" if k < 2 else f"{patient}_tile{k}.png"
                _save(root / cls / name, tile)
                rows.append((f"{cls}/{name}", patient))
    blank = np.full((TILE_SIZE, TILE_SIZE, 3), WHITE, dtype=np.uint8)  # background: dropped at indexing
    _save(root / CLASSES[0] / "N01_blank.png", blank)
    rows.append((f"{CLASSES[0]}/N01_blank.png", "N01"))
    write_csv(root / PATIENTS, ["path", "patient"], rows)
    return mark_demo(root, "pathology", DEMO_VERSION)


def _save(path: Path, rgb: np.ndarray) -> None:
    """Write atomically: PNG, JPEG (quality 92) or a two-page TIFF (full size + half-size page)."""
    img = Image.fromarray(rgb, "RGB") if rgb.ndim == 3 else Image.fromarray(rgb)
    if path.suffix.lower() in (".tif", ".tiff"):
        save_image(path, img, compression="tiff_deflate", save_all=True, append_images=[img.reduce(2)])
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        save_image(path, img, quality=92)
    else:
        save_image(path, img)
