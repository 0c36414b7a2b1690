"""The CT modality: HU-windowed, resampled 3D sub-volumes of NIfTI files and DICOM series."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from medkit.api import (
    ConfigError, DEFAULT_CACHE_BYTES, Volume, WindowedVolumeModality, hu_window, load_volume, pad_depth,
    resampled_slices, resize,
)

log = logging.getLogger(__name__)

#: Bump when :meth:`CTModality.prepare` changes its output for the same options (invalidates disk caches).
PREPARE_VERSION = 1


class CTModality(WindowedVolumeModality):
    """CT volumes (NIfTI ``.nii``/``.nii.gz``, DICOM series folders, single ``.dcm`` files).

    Args:
        spacing: millimetres between slices after resampling the slice axis (reference: 1 mm).
            In-plane, every slice is resampled straight to ``input_size[1:]``.
        window: HU window ``(low, high)``; values are clipped to it and mapped onto ``[-1, 1]``.
        depth: slices per window, cut from the resampled volume.
        depth_stride: slices between the starts of consecutive windows.
        input_size: ``(D, H, W)`` of a sample; windows are resized to it (``D != depth`` resizes depth).
        orientation: MONAI axcodes every volume is reoriented to; the third letter's axis is the
            slice axis (``"RAS"``: axial windows).
        flip_prob: training augmentation, probability of flipping each of the three axes.
        cache_size: preprocessed volumes kept in memory at most (LRU); ``None``: as many as
            ``cache_bytes`` allows; 0 disables the memory cache.
        cache_bytes: bytes of preprocessed volumes kept in memory (LRU, shared by the training and
            the evaluation dataset; default 1 GiB); 0 disables the memory cache.
        disk_cache: also write every preprocessed volume once (float32 safetensors, values
            unchanged) under ``$MEDKIT_CACHE_DIR/volumes`` (default ``~/.cache/medkit/volumes``),
            keyed by the source files' contents and the preprocessing options; later runs read
            only the windows they need from there. ``auto`` (default): only when the archive,
            prepared, does not fit the memory cache (then no window re-prepares its volume).
        on_error: ``"raise"`` (unreadable or non-3D file is a DataError) or ``"skip"`` (logged and
            listed in ``dataset.skipped``).
        check_modality: refuse a DICOM file or series whose Modality tag names another modality
            (e.g. a CT series in an MRI folder); ``false`` reads it anyway.
        max_upsample: skip (with a reason naming the file) a volume that would be upsampled more
            than this many times on an axis: in-plane to ``input_size[1:]``, or along the slices to
            ``spacing`` (volumes of more than one slice); ``null`` keeps every volume. 10 keeps
            5-10 mm clinical slices at 1 mm and 64² matrices in a 192² window, and refuses thicker
            slabs and volumes under 20 voxels across.
    """

    name = "ct"

    def __init__(self, spacing: float = 1.0, window: tuple[float, float] = (-1024.0, 1024.0),
                 depth: int = 16, depth_stride: int = 8,
                 input_size: tuple[int, int, int] = (16, 192, 192), orientation: str = "RAS",
                 flip_prob: float = 0.5, cache_size: int | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, disk_cache: bool | str = "auto",
                 on_error: str = "raise", check_modality: bool = True, max_upsample: float | None = 10.0) -> None:
        if float(spacing) <= 0:
            raise ConfigError(f"modality ct: spacing must be > 0 mm, got {spacing!r}")
        try:
            low, high = (float(v) for v in window)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"modality ct: window must be [low, high] in HU, got {window!r}") from exc
        if not low < high:
            raise ConfigError(f"modality ct: window needs low < high, got {window!r}")
        self.set_window_options(depth=depth, depth_stride=depth_stride, input_size=input_size,
                                 orientation=orientation, flip_prob=flip_prob, cache_size=cache_size,
                                 cache_bytes=cache_bytes, disk_cache=disk_cache, on_error=on_error,
                                 max_upsample=max_upsample)
        self.check_modality = bool(check_modality)
        self.spacing, self.window = float(spacing), (low, high)

    def demo_data(self, root: Path) -> Path:
        """Write six small synthetic CT volumes (NIfTI) with ``labels.csv`` under ``root/ct``."""
        from .demo import write_demo

        return write_demo(Path(root) / "ct")

    def window_slices(self, vol: Volume) -> int:
        """Depth of ``vol`` once resampled to ``spacing`` and padded to at least one window."""
        return max(resampled_slices(vol.slices, vol.spacing, self.spacing), self.depth)

    def prepare(self, vol: Volume) -> torch.Tensor:
        """Read, reorient, clip HU, resample, scale to [-1, 1]: ``[1, D, H, W]``."""
        x = load_volume(vol, self.orientation)  # [X, Y, Z] (Z: slices)
        x = x.clamp(*self.window)  # clip before interpolation so out-of-FOV values cannot bleed in
        x = x.permute(2, 0, 1)[None]  # [1, Z, X, Y], the reference's (1, z, x, y)
        depth = resampled_slices(vol.slices, vol.spacing, self.spacing)
        x = resize(x, (depth, *self.input_size[1:]))
        x = hu_window(x, self.window)
        return pad_depth(x, self.depth, value=-1.0)  # padding is air (the window's low end)

    def finish(self, window: torch.Tensor) -> torch.Tensor:
        return resize(window, self.input_size)

    def fingerprint(self) -> str:
        """Every option that changes :meth:`prepare`'s output (the disk cache's key)."""
        return json.dumps({"modality": "ct", "version": PREPARE_VERSION, "spacing": self.spacing,
                           "window": list(self.window), "depth": self.depth,
                           "size": list(self.input_size[1:]), "orientation": self.orientation})
