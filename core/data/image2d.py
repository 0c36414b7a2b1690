"""2D views: seeded RandomResizedCrop + horizontal flip of a PIL image, tensor conversion, normalisation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from medkit.data.transforms import zscore

#: (left, upper, right, lower) in pixels of the source image (floats allowed).
Box = tuple[float, float, float, float]
NORMALIZE_MODES = ("none", "imagenet", "zscore")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Volume formats: recognised by 2D modalities only to refuse them with a clear message.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def raster_kind(path: Path) -> str | None:
    """``"raster"`` (PNG/JPEG/TIFF), ``"volume"`` (a 3D format, to be refused) or ``None``."""
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        return "volume"
    return "raster" if path.suffix.lower() in RASTER_SUFFIXES else None


def random_resized_crop_params(g: torch.Generator, size: int, scale: Sequence[float] = (0.2, 1.0),
                               ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[float, float, float, float]:
    """torchvision's ``RandomResizedCrop.get_params`` on a ``size``×``size`` canvas, drawn from ``g``.

    The canvas is the image as the reference sees it (already resized to ``size``²);
    the result is returned as fractions ``(top, left, height, width)`` of that canvas so the crop
    can be taken from the full-resolution source in one resampling.
    """
    area = float(size * size)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    lo, hi = float(scale[0]), float(scale[1])
    for _ in range(10):
        # both uniforms of an attempt in one call: the CPU generator fills a tensor draw by draw,
        # so these are the two values two scalar draws give (tested), at half the calls
        u_area, u_ratio = torch.rand(2, generator=g, dtype=torch.float64).tolist()
        target = area * (lo + (hi - lo) * u_area)
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u_ratio)
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= size and 0 < h <= size:
            top = int(torch.randint(0, size - h + 1, (1,), generator=g))
            left = int(torch.randint(0, size - w + 1, (1,), generator=g))
            return top / size, left / size, h / size, w / size
    return 0.0, 0.0, 1.0, 1.0  # torchvision's fallback for a square canvas: the whole image


def crop_box(box: Box, params: tuple[float, float, float, float]) -> Box:
    """The sub-box of ``box`` that the fractional crop ``(top, left, height, width)`` selects."""
    left, upper, right, lower = box
    top, lft, h, w = params
    bw, bh = right - left, lower - upper
    return (left + lft * bw, upper + top * bh, left + (lft + w) * bw, upper + (top + h) * bh)


def make_view(img: Image.Image, box: Box, size: int, generator: torch.Generator | None, *,
              crop_scale: Sequence[float] = (0.2, 1.0), hflip: bool = True) -> Image.Image:
    """Resample ``box`` of ``img`` to ``size``×``size`` (bicubic, aspect ratio not kept, as the
    reference); pixels outside ``box`` are never used. With a ``generator``: a RandomResizedCrop
    of the box, then a horizontal flip with probability 0.5 (the flip draw is always made, so
    ``hflip=False`` does not shift later draws)."""
    if box != (0.0, 0.0, float(img.width), float(img.height)):
        # cut the box out first so that the resampling filter never reads the neighbouring tiles
        x0, y0 = int(math.floor(box[0])), int(math.floor(box[1]))
        img = img.crop((x0, y0, int(math.ceil(box[2])), int(math.ceil(box[3]))))
        box = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    flip = False
    if generator is not None:
        box = crop_box(box, random_resized_crop_params(generator, size, crop_scale))
        flip = float(torch.rand((), generator=generator, dtype=torch.float64)) < 0.5 and hflip
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else out


def to_tensor(img: Image.Image) -> torch.Tensor:
    """``[C, H, W]`` float32 in [0, 1]: mode ``F`` is taken as already in [0, 1] (clamped after the
    bicubic overshoot); 8-bit modes are divided by 255."""
    arr = np.array(img, dtype=np.float32)  # a writable copy
    if img.mode != "F":
        arr = arr / 255.0
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
    return x.clamp_(0.0, 1.0).contiguous()


def normalize(x: torch.Tensor, how: str) -> torch.Tensor:
    """``none`` (keep [0, 1], the MedCoSS pre-training convention), ``imagenet`` (channel mean/std
    of ImageNet) or ``zscore`` (per image and channel: zero mean, unit std)."""
    if how == "none":
        return x
    if how == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std
    if how == "zscore":
        return zscore(x, unbiased=True, eps=1e-6)
    raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {how!r}")
