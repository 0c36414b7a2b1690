"""Prepared 2D canvases: the un-augmented view stored at ``input_size``², cropped and flipped at load time in torch."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from medkit.api.errors import DataError
from medkit.data.image2d import Box, make_view, normalize, random_resized_crop_params

_U16 = 65535.0


def encode_canvas(img: Image.Image, box: Box | None, size: int, store: str) -> dict[str, np.ndarray]:
    """The stored item of a decoded 2D image on the ``view`` canvas: region ``box`` (``None``: all)
    resized to ``size``² by :func:`~medkit.data.image2d.make_view` without a generator, i.e. the
    folder path's un-augmented view (bicubic, aspect ratio not kept, as the reference's resize).
    Grey in [0, 1] (mode ``F``) becomes ``uint16`` with ``store="auto"`` (steps of 1/65535) or
    stays ``float32``; 8-bit modes stay ``uint8``. Values are clipped to [0, 1] as the folder
    path's tensor conversion clips the bicubic overshoot."""
    full = (0.0, 0.0, float(img.width), float(img.height))
    view = make_view(img, tuple(float(v) for v in box) if box is not None else full,  # type: ignore[arg-type]
                     size, None)
    if view.mode == "F":
        arr = np.clip(np.asarray(view, dtype=np.float32), 0.0, 1.0)
        if store == "auto":
            arr = np.rint(arr * np.float32(_U16)).astype(np.uint16)
    elif view.mode in ("L", "RGB"):
        arr = np.asarray(view, dtype=np.uint8)
    else:
        raise DataError(f"prepare: 2D images of mode {view.mode!r} are not supported (expected F, L or RGB)")
    return {"x": np.ascontiguousarray(arr)}


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` ``[1, C, h, w]`` resized to ``size``² with torch's antialiased bicubic, which is
    Pillow's kernel (a = -0.5, support clipped and renormalised at the edges): for a cut-out crop
    it gives what Pillow's ``crop(...).resize(..., BICUBIC)`` gives — torchvision's
    ``RandomResizedCrop`` on a PIL image, the reference's augmentation — to ~1e-5 (uint8: within 2 levels, the
    rounding between the two passes)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)


def _generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: this thread's one, re-seeded (``manual_seed`` resets
    its whole state, cached normal samples included), so that a sample makes no new generator."""
    gen = getattr(_local, "gen", None)
    if gen is None:
        gen = _local.gen = torch.Generator()
    return gen.manual_seed(int(seed))


_local = threading.local()


def _draw(seed: int, size: int, crop_scale: Any) -> tuple[int, int, int, int, bool]:
    """``(top, left, height, width, flip)`` in pixels of an ``size``² canvas, drawn from ``seed``
    with :func:`~medkit.data.image2d.make_view`'s generator calls in its order: the crop of
    :func:`~medkit.data.image2d.random_resized_crop_params`, then the flip's draw (made even where
    flips are off, as there)."""
    gen = _generator(seed)
    top, left, h, w = random_resized_crop_params(gen, size, crop_scale)
    flip = float(torch.rand((), generator=gen, dtype=torch.float64)) < 0.5
    return (int(round(top * size)), int(round(left * size)), int(round(h * size)), int(round(w * size)), flip)


def _view(crop: np.ndarray, size: int) -> torch.Tensor:
    """The crop ``[h, w]`` or ``[h, w, 3]`` of a stored canvas resized to ``[1, C, size, size]``
    float32 in [0, 1] (not yet clamped for float canvases). One pass per step: the integer →
    float conversion and the scaling to [0, 1] are one numpy ufunc call (the same float32
    products as converting first), the resize one torch call on a tensor sharing numpy's memory."""
    if crop.dtype == np.uint8:  # torch resizes uint8 in integers, rounded, as Pillow does for mode L/RGB
        # HWC contiguous: as [1, C, h, w] it has channels-last strides, what torch's vectorised
        # uint8 kernel wants for 3 channels (for one channel both layouts are the same)
        x = torch.from_numpy(np.ascontiguousarray(crop))
        x = x[None, None] if crop.ndim == 2 else x.permute(2, 0, 1)[None]
        return _resize(x, size).to(torch.float32).mul_(1.0 / 255.0)
    chw = crop[None] if crop.ndim == 2 else crop.transpose(2, 0, 1)
    if crop.dtype == np.uint16:
        y = np.multiply(chw, np.float32(1.0 / _U16), dtype=np.float32, order="C")
    else:
        y = np.array(chw, dtype=np.float32, order="C")  # a copy: the stored item stays as read
    return _resize(torch.from_numpy(y)[None], size)


def canvas_sample(modality: Any, arr: np.ndarray, sample_id: str, label: int | None,
                  seed: int | None) -> dict[str, Any]:
    """The sample of a stored ``view`` canvas ``arr`` (``[S, S]`` or ``[S, S, 3]``; uint8, uint16
    or float32; ``S = input_size``): the canvas itself with ``seed=None``, otherwise a
    RandomResizedCrop of it + a horizontal flip, drawn from ``seed`` exactly as
    :func:`~medkit.data.image2d.make_view` draws them (the same generator calls in the same order).
    On an ``S``² canvas the crop falls on whole pixels, so it is cut out (a numpy view) and
    resized in one torch call, with no PIL image and no float64 on the way. ``arr`` is only read
    (it may view a mapped chunk).

    Raises:
        DataError: a canvas of another size or dtype than this run's (a run checks the stored size
            against ``input_size`` before it reads, so this means a foreign or damaged item).
    """
    opts = modality.options
    size = int(opts.input_size)
    if arr.shape[:2] != (size, size) or arr.dtype not in (np.uint8, np.uint16, np.float32):
        raise DataError(f"prepared 2D canvas of shape {list(arr.shape)} and dtype {arr.dtype} is not the "
                        f"{size}² canvas modality.{modality.name}.input_size={size} asks for; prepare the data again")
    flip = False
    if seed is not None:
        top, left, h, w, flip = _draw(seed, size, opts.crop_scale)
        flip = flip and bool(opts.hflip)
        arr = arr[top:top + h, left:left + w]
    y = _view(arr, size)[0]  # [C, S, S], a new tensor
    if arr.dtype != np.uint8:  # the bicubic overshoot of float data, as to_tensor clamps it
        y = y.clamp_(0.0, 1.0)
    if flip:
        y = y.flip(-1)
    if y.shape[0] != modality.channels:
        # grey → identical channels, as a view: collating stacks it (one copy), so no copy here
        y = y.expand(modality.channels, -1, -1)
    sample: dict[str, Any] = {"input": normalize(y, opts.normalize), "id": sample_id}
    if label is not None:
        sample["label"] = label
    return sample
