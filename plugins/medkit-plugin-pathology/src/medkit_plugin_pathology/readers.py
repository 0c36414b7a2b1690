"""Pathology image readers (Pillow): lazy headers, RGB conversion in RGB order, fast thumbnails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medkit.api import DataError, raster_kind

_FIX = "replace or remove the file, or set modality.pathology.on_error=skip to skip such files"
_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
#: ``"raster"``, ``"volume"`` (refused later) or ``None`` (not an image: ignored).
file_kind = raster_kind


def not_2d(path: Path, got: str) -> DataError:
    return DataError(f"{path}: expected a 2D image (an RGB PNG/JPEG/TIFF tile or slide), got {got}; "
                     f"3D data belong to the ct or mri modality — {_FIX}")


def unreadable(path: Path, exc: BaseException) -> DataError:
    hint = ""
    if isinstance(exc, Image.DecompressionBombError):
        hint = " (larger than Pillow's MAX_IMAGE_PIXELS: tile the slide first, or raise that limit)"
    return DataError(f"{path}: cannot read this file as a PNG/JPEG/TIFF image "
                     f"({type(exc).__name__}: {exc}){hint}; {_FIX}")


def image_size(path: Path, kind: str) -> tuple[int, int]:
    """``(width, height)`` from the header only (Pillow opens lazily; TIFF: the first page).

    Raises:
        DataError: naming the file when it is unreadable or is a volume.
    """
    import warnings

    if kind == "volume":
        raise not_2d(path, "a volume file (NIfTI/NRRD/MetaImage)")
    try:
        with warnings.catch_warnings(record=True) as caught, Image.open(path) as img:
            warnings.simplefilter("always")
            size = img.size
    except _ERRORS as exc:
        raise unreadable(path, exc) from exc
    _attributed(path, caught)
    return size


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to ``RGB`` in R, G, B order (never BGR).

    Transparent pixels (RGBA, LA, P with transparency) are composited on white (slide background);
    16-bit and 32-bit grey are scaled to 8 bits (by 65535, floats by 1 when ≤ 1 else by 255);
    CMYK, YCbCr, palette and grey go through Pillow's conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            top = 1.0 if arr.size and float(arr.max()) <= 1.0 else 255.0
        else:
            top = 65535.0 if (mode.startswith("I;16") or (arr.size and float(arr.max()) > 255)) else 255.0
        grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return img.convert("RGB")


def _attributed(path: Path, caught: list) -> None:
    """Pillow's warnings about one file, named: a truncated file (Pillow fills the missing pixels with
    black and only warns "Truncated File Read") is refused; others are logged with the file name."""
    import logging

    for text in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
        if "truncated" in text.lower():
            raise DataError(f"{path}: the file is truncated ({text}): its pixel data end early and the rest "
                            f"would be read as black; {_FIX}")
        logging.getLogger(__name__).warning("%s: %s", path, text)


def read_rgb(path: Path) -> Image.Image:
    """The whole image (TIFF: first page) decoded as ``RGB``.

    Raises:
        DataError: naming the file when it cannot be decoded or is truncated.
    """
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught, Image.open(path) as img:
            warnings.simplefilter("always")
            img.load()
            rgb = to_rgb(img)
    except _ERRORS as exc:
        raise unreadable(path, exc) from exc
    _attributed(path, caught)
    return rgb


def read_thumbnail(path: Path, factor: int) -> tuple[Image.Image, tuple[int, int]]:
    """An ``RGB`` thumbnail about ``factor`` times smaller per side, and the full ``(width, height)``.

    JPEGs are decoded directly at a reduced scale (Pillow ``draft``), the rest are box-averaged
    with ``Image.reduce``; either way the full-resolution image is never resampled twice.
    """
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught, Image.open(path) as img:
            warnings.simplefilter("always")
            width, height = img.size
            if factor > 1:
                img.draft("RGB", (max(1, width // factor), max(1, height // factor)))
            img.load()
            rgb = to_rgb(img)
    except _ERRORS as exc:
        raise unreadable(path, exc) from exc
    _attributed(path, caught)
    rest = max(1, int(round(factor * rgb.width / width)))
    return (rgb.reduce(rest) if rest > 1 else rgb), (width, height)
