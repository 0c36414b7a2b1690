"""The MRI modality: percentile-clipped, z-scored 3D sub-volumes of NIfTI files and DICOM series."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from medkit.api import (
    ConfigError, DEFAULT_CACHE_BYTES, Volume, WindowedVolumeModality, clip_zscore, load_volume, pad_depth,
    resampled_slices, resize,
)

log = logging.getLogger(__name__)

#: Bump when :meth:`MRIModality.prepare` changes its output for the same options (invalidates disk caches).
PREPARE_VERSION = 1


class MRIModality(WindowedVolumeModality):
    """MRI volumes (NIfTI ``.nii``/``.nii.gz``, DICOM series folders, single ``.dcm`` files).

    Args:
        spacing: millimetres between slices after resampling the slice axis; ``None`` (the
            reference) keeps the native slices. In-plane, slices are resized to ``input_size[1:]``.
        drop_fraction: fraction of slices dropped at each end of the slice axis (reference: 10 %).
        percentiles: ``(low, high)`` percentiles the intensities are clipped to before the z-score.
        normalize: ``"window"`` (reference: clip and z-score every window on its own) or
            ``"volume"`` (once per volume, so windows of one volume share one scale).
        depth: slices per window.
        depth_stride: slices between the starts of consecutive windows.
        input_size: ``(D, H, W)`` of a sample; windows are resized to it.
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
        on_error: ``"raise"`` (unreadable or non-3D file is a DataError) or ``"skip"``.
        check_modality: refuse a DICOM file or series whose Modality tag names another modality
            (e.g. a CT series in an MRI folder); ``false`` reads it anyway.
        max_upsample: skip (with a reason naming the file) a volume that would be upsampled more
            than this many times on an axis: in-plane to ``input_size[1:]``, or along the slices to
            ``spacing`` (volumes of more than one slice); ``null`` keeps every volume. 10 keeps
            5-10 mm clinical slices at 1 mm and 64² matrices in a 192² window, and refuses thicker
            slabs and volumes under 20 voxels across.
    """

    name = "mri"

    def __init__(self, spacing: float | None = None, drop_fraction: float = 0.1,
                 percentiles: tuple[float, float] = (0.2, 99.8), normalize: str = "window",
                 depth: int = 16, depth_stride: int = 8,
                 input_size: tuple[int, int, int] = (16, 192, 192), orientation: str = "RAS",
                 flip_prob: float = 0.5, cache_size: int | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, disk_cache: bool | str = "auto",
                 on_error: str = "raise", check_modality: bool = True, max_upsample: float | None = 10.0) -> None:
        if spacing is not None and float(spacing) <= 0:
            raise ConfigError(f"modality mri: spacing must be > 0 mm or null, got {spacing!r}")
        if not 0.0 <= float(drop_fraction) < 0.5:
            raise ConfigError(f"modality mri: drop_fraction must be in [0, 0.5), got {drop_fraction!r}")
        try:
            low, high = (float(v) for v in percentiles)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"modality mri: percentiles must be [low, high], got {percentiles!r}") from exc
        if not 0.0 <= low < high <= 100.0:
            raise ConfigError(f"modality mri: percentiles need 0 <= low < high <= 100, got {percentiles!r}")
        if normalize not in ("window", "volume"):
            raise ConfigError(f"modality mri: normalize must be 'window' or 'volume', got {normalize!r}")
        self.set_window_options(depth=depth, depth_stride=depth_stride, input_size=input_size,
                                 orientation=orientation, flip_prob=flip_prob, cache_size=cache_size,
                                 cache_bytes=cache_bytes, disk_cache=disk_cache, on_error=on_error,
                                 max_upsample=max_upsample)
        self.check_modality = bool(check_modality)
        self.spacing = None if spacing is None else float(spacing)
        self.drop_fraction, self.percentiles, self.normalize = float(drop_fraction), (low, high), normalize

    def demo_data(self, root: Path) -> Path:
        """Write six small synthetic T1-like volumes (NIfTI) with ``labels.csv`` under ``root/mri``."""
        from .demo import write_demo

        return write_demo(Path(root) / "mri")

    def _slices(self, vol: Volume) -> tuple[int, int]:
        """(slices after optional resampling, slices dropped at each end)."""
        total = resampled_slices(vol.slices, vol.spacing, self.spacing)
        return total, int(total * self.drop_fraction)

    def window_slices(self, vol: Volume) -> int:
        """Depth of ``vol`` once trimmed and padded to at least one window."""
        total, drop = self._slices(vol)
        return max(total - 2 * drop, self.depth)

    def prepare(self, vol: Volume) -> torch.Tensor:
        """Read, reorient, resize in-plane (and resample), trim the ends: ``[1, D, H, W]``."""
        x = load_volume(vol, self.orientation)  # [X, Y, Z] (Z: slices)
        x = x.permute(2, 0, 1)[None]  # [1, Z, X, Y]
        total, drop = self._slices(vol)
        x = resize(x, (total, *self.input_size[1:]))[:, drop:total - drop]
        x = pad_depth(x, self.depth, value=float(x.min()))
        return clip_zscore(x, self.percentiles) if self.normalize == "volume" else x

    def finish(self, window: torch.Tensor) -> torch.Tensor:
        window = resize(window, self.input_size)
        return clip_zscore(window, self.percentiles) if self.normalize == "window" else window

    def fingerprint(self) -> str:
        """Every option that changes :meth:`prepare`'s output (the disk cache's key)."""
        return json.dumps({"modality": "mri", "version": PREPARE_VERSION, "spacing": self.spacing,
                           "drop_fraction": self.drop_fraction, "percentiles": list(self.percentiles),
                           "normalize": self.normalize, "depth": self.depth,
                           "size": list(self.input_size[1:]), "orientation": self.orientation})
