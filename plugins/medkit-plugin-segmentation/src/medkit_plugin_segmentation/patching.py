"""The default training patch and sliding-window tile of the segmentation task: the tokenizer's
base size clipped to the smallest image of the data."""

from __future__ import annotations

import logging
from typing import Any, Sequence

log = logging.getLogger(__name__)

#: the patch tokenizers' own default base sizes (``patch_2d`` 224², ``patch_3d`` 16×192×192), used
#: for a backbone that declares none
DEFAULT_BASE: dict[int, tuple[int, ...]] = {2: (224, 224), 3: (16, 192, 192)}
#: the segmentation decoder's grid: every patch side is a multiple of this
STEP = 16


def _ints(value: Any) -> tuple[int, ...] | None:
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        return None
    return out or None


def backbone_base(backbone: Any, dims: int) -> tuple[tuple[int, ...], str]:
    """The input size the backbone was built for, and where it comes from (for the log line)."""
    tok = getattr(backbone, "tokenizer", None)  # the medkit encoder seen through its tokenizer
    size = _ints(getattr(tok, "base_size", None) or ())
    if size and len(size) == dims:
        return size, f"tokenizer {getattr(backbone, 'tokenizer_name', 'patch')}'s base size"
    embed = getattr(getattr(backbone, "net", None), "patch_embed", None)  # a timm ViT
    size = _ints(getattr(embed, "img_size", None) or ())
    if size and len(size) == dims:
        return size, "the backbone's input size"
    return DEFAULT_BASE[dims], f"the patch_{dims}d tokenizer's default base size"


def default_patch(shapes: Sequence[Sequence[int]], base: Sequence[int]) -> tuple[int, ...]:
    """``base`` clipped to the smallest image on every axis, rounded down to a multiple of 16
    (at least 16: an image smaller than that is padded)."""
    small = [min(int(s[i]) for s in shapes) for i in range(len(base))]
    return tuple(max(STEP, min(int(b), s) // STEP * STEP) for b, s in zip(base, small))


def choose_patch(shapes: Sequence[Sequence[int]], backbone: Any, dims: int) -> tuple[int, ...] | None:
    """The patch of a task with no ``patch_size``: ``None`` (each image whole, padded to a multiple
    of 16) when every image has the same grid; otherwise :func:`default_patch`, logged with why."""
    grids = sorted({tuple(int(v) for v in s) for s in shapes})
    if len(grids) <= 1:
        if grids:
            log.info("task segmentation: every image is %s, so each is trained and evaluated whole (padded to a "
                     "multiple of 16); set task.patch_size to train on crops", _fmt(grids[0]))
        return None
    base, origin = backbone_base(backbone, dims)
    patch = default_patch(grids, base)
    low = [min(g[i] for g in grids) for i in range(dims)]
    high = [max(g[i] for g in grids) for i in range(dims)]
    log.info("task segmentation: the %d images differ in size (smallest %s, largest %s); training patch and "
             "sliding-window tile %s = %s %s clipped to the smallest image, in multiples of 16 (set "
             "task.patch_size to choose another)", len(shapes), _fmt(low), _fmt(high), _fmt(patch), origin,
             _fmt(base))
    return patch


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)
