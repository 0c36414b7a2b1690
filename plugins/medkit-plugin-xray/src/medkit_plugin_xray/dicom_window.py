"""DICOM X-rays with a linear VOI window, reduced before it: clipped in stored units, box-averaged, then mapped."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    return None if value is None else float(value)


def linear_window(ds: Any) -> tuple[float, float] | None:
    """The stored pixel values that the file's VOI transform maps to 0 and to 1, when that
    transform is a linear window, else ``None`` (the caller then takes the full-resolution path).

    Linear means: one grey sample per pixel (MONOCHROME1/2), no VOI LUT Sequence (pydicom prefers
    it), the first WindowCenter/WindowWidth with ``VOILUTFunction`` LINEAR (PS3.3 C.11.2.1.2.1:
    ``c - 0.5 ± (w - 1) / 2``, width > 1) or LINEAR_EXACT (``c ± w / 2``), and no Modality LUT
    Sequence but, where present, RescaleSlope > 0 / RescaleIntercept (folded into the bounds).
    pydicom's ``apply_voi_lut`` on such a file, scaled to its output range, is then exactly
    ``clip((x - low) / (high - low), 0, 1)``.
    """
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        return None
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        return None
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    try:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        slope, intercept = 1.0, 0.0
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:  # pydicom rescales only with both
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    except (TypeError, ValueError):
        return None
    if center is None or width is None or not all(map(math.isfinite, (center, width, slope, intercept))):
        return None
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function == "LINEAR" and width > 1:
        center, width = center - 0.5, width - 1.0
    elif not (function == "LINEAR_EXACT" and width > 0):
        return None  # SIGMOID, a hard threshold (width 1) or an unknown function: not a linear window
    if not slope > 0:
        return None
    low, high = center - width / 2.0, center + width / 2.0  # in modality-LUT units
    return (low - intercept) / slope, (high - intercept) / slope


def reduce_windowed(stored: np.ndarray, bounds: tuple[float, float], factor: int) -> np.ndarray:
    """The linear window ``bounds`` (:func:`linear_window`) of ``stored`` ``[H, W]`` in [0, 1],
    box-averaged by ``factor`` (as Pillow's ``reduce``), in float32.

    The window is an affine map clipped at both ends, and a box average commutes with an affine
    map: so the full-resolution pixels are only clipped to ``bounds`` (one pass), averaged, and the
    affine map runs on the reduced image. The result is the box average of the windowed image
    (what windowing at full resolution and then reducing gives), up to float32 rounding — the
    clipping at the window's edges is kept exact, not approximated.
    """
    import torch
    import torch.nn.functional as F

    low, high = bounds
    values = torch.from_numpy(stored.astype(np.float32))  # integers up to 2**24 exactly
    values.clamp_(low, high)
    if factor > 1:
        # Pillow's ``reduce`` (a partial last block is averaged over what it has) in torch: the
        # same averages without the two full-size copies ``Image.fromarray`` makes of a float image
        values = F.avg_pool2d(values[None, None], factor, ceil_mode=True)[0, 0]
    out = values.sub_(low).mul_(1.0 / (high - low)).clamp_(0.0, 1.0)
    return out.numpy()
