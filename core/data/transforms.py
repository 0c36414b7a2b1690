"""Array transforms shared by pre-training, evaluation, ``embed`` and fine-tuning: intensity (HU
window, percentile clip + z-score, unit/min-max scaling), resizing, and seeded flips."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from medkit.api.errors import ConfigError

#: ``none`` keeps raw values; ``unit`` divides by the integer type's maximum (0..255 → [0, 1]);
#: ``minmax`` maps each image to [0, 1]; ``zscore`` standardises each channel. ``auto`` is
#: resolved by the task (classification 2D: unit, otherwise zscore).
TASK_NORMALIZE_MODES = ("auto", "none", "unit", "minmax", "zscore")


def hu_window(x: torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """Clip Hounsfield units to ``window = (low, high)`` and map it linearly onto ``[-1, 1]``.

    With the default ``(-1024, 1024)`` this is the reference's ``clip`` then ``/ 1024``.
    """
    low, high = float(window[0]), float(window[1])
    centre, half = (low + high) / 2.0, (high - low) / 2.0
    return (x.clamp(low, high) - centre) / half


def clip_zscore(x: torch.Tensor, percentiles: Sequence[float]) -> torch.Tensor:
    """Clip ``x`` to its ``(low, high)`` percentiles (numpy's linear interpolation), then z-score it
    (population std); a constant input becomes zeros."""
    arr = x.detach().to(torch.float64).cpu().numpy()
    low, high = np.percentile(arr, [float(percentiles[0]), float(percentiles[1])])
    arr = np.clip(arr, low, high)
    std = float(arr.std())
    if std < 1e-8:
        return torch.zeros_like(x, dtype=torch.float32)
    return torch.from_numpy((arr - arr.mean()) / std).to(torch.float32)


def zscore(x: torch.Tensor, *, unbiased: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """Each channel of ``[C, *S]`` to zero mean and unit std (``unbiased``: Bessel's correction);
    the std is clamped at ``eps``."""
    flat = x.reshape(x.shape[0], -1)
    shape = (-1, *([1] * (x.ndim - 1)))
    mean = flat.mean(dim=1).reshape(shape)
    std = flat.std(dim=1, unbiased=unbiased).reshape(shape)
    return (x - mean) / std.clamp_min(eps)


def normalize(arr: np.ndarray, mode: str, *, clip: Sequence[float] | None = None) -> torch.Tensor:
    """``arr`` as float32 with ``clip`` applied first, then ``mode`` (see :data:`TASK_NORMALIZE_MODES`)."""
    if mode not in TASK_NORMALIZE_MODES or mode == "auto":
        raise ConfigError(f"normalize mode {mode!r} is not one of {', '.join(TASK_NORMALIZE_MODES[1:])}")
    top = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else None
    x = torch.from_numpy(np.asarray(arr, dtype=np.float32).copy())
    if clip is not None:
        low, high = (float(v) for v in clip)
        x = x.clamp(low, high)
    if mode == "unit":
        if top is not None and clip is None:
            return x / top
        mode = "minmax"
    if mode == "minmax":
        lowest, highest = x.min(), x.max()
        return (x - lowest) / (highest - lowest).clamp_min(1e-8)
    if mode == "zscore":
        return zscore(x)
    return x


def resize(x: torch.Tensor, size: Sequence[int], *, nearest: bool = False) -> torch.Tensor:
    """Resize ``[C, *S]`` to ``size`` (bilinear with antialiasing in 2D, trilinear in 3D, or nearest
    for label maps); a no-op when already that size."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[1:]) == size:
        return x
    if len(size) != x.ndim - 1:
        raise ConfigError(f"size {list(size)} has {len(size)} axes but the image is {x.ndim - 1}D")
    if nearest:
        out = torch.nn.functional.interpolate(x[None].float(), size=size, mode="nearest")[0]
        return out.to(x.dtype)
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return torch.nn.functional.interpolate(x[None], size=size, mode=mode, align_corners=False,
                                           antialias=len(size) == 2)[0]


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (reduced to 63 bits)."""
    return torch.Generator().manual_seed(int(seed) % (2**63))


def random_flips(tensors: Sequence[torch.Tensor], gen: torch.Generator, spatial_dims: int,
                 p: float = 0.5) -> list[torch.Tensor]:
    """Flip every tensor ``[..., *S]`` along each of the last ``spatial_dims`` axes with prob ``p``
    (the same draws for all tensors, e.g. an image and its mask)."""
    out = list(tensors)
    for axis in range(1, spatial_dims + 1):
        if float(torch.rand(1, generator=gen)) < p:
            out = [t.flip(-axis) for t in out]
    return out
