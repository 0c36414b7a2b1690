"""What the 3D modalities share: window, cache and error options, and indexing a folder into windows."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any

import torch

from medkit.api.errors import ConfigError, DataError
from medkit.data.cache import DiskCache, VolumeCache, volume_cache_dir
from medkit.data.demo import write_csv
from medkit.data.upsample import DEFAULT_MAX_UPSAMPLE_3D, check_max_upsample, upsample_factor, upsample_reason
from medkit.data.volumes import Volume, find_volumes
from medkit.data.walk import check_on_error, record_skip
from medkit.data.windows import WindowDataset, resampled_slices
from medkit.storage.files import atomic_write_bytes

log = logging.getLogger(__name__)


def positive_ints(value: Any, n: int, what: str, owner: str) -> tuple[int, ...]:
    """``value`` as ``n`` positive integers, or a :class:`ConfigError` naming ``owner`` and ``what``."""
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{owner}: {what} must be {n} integers, got {value!r}") from exc
    if len(out) != n or min(out) < 1:
        raise ConfigError(f"{owner}: {what} must be {n} positive integers, got {value!r}")
    return out


class WindowedVolumeModality:
    """Base of a 3D modality whose samples are windows of ``depth`` slices cut from volumes.

    A subclass sets ``name``, calls :meth:`set_window_options` from its ``__init__`` and defines
    ``window_slices`` (the depth a volume has once prepared), ``prepare``, ``finish`` and
    ``fingerprint`` (every option that changes ``prepare``'s output: the disk cache's key).
    """

    name = ""
    dims = 3
    default_tokenizer = "patch_3d"
    default_objective = "mae"

    def set_window_options(self, *, depth: int, depth_stride: int, input_size: Any, orientation: str,
                           flip_prob: float, cache_size: int | None, cache_bytes: int,
                           disk_cache: bool | str, on_error: str,
                           max_upsample: float | None = DEFAULT_MAX_UPSAMPLE_3D) -> None:
        """Check and keep the window options a subclass's ``__init__`` receives (part of the plugin
        contract): ``depth`` slices per window every ``depth_stride`` slices, resized to ``input_size``
        ``(D, H, W)`` after reorienting to ``orientation`` (3 axcodes); random flips with ``flip_prob``;
        decoded volumes kept in memory up to ``cache_size`` volumes / ``cache_bytes`` bytes and on disk
        when ``disk_cache`` (``"auto"``: when the archive does not fit the memory cache,
        :mod:`medkit.data.disk_auto`); ``on_error`` (``"raise"`` or ``"skip"``) for unreadable files;
        volumes upsampled more than ``max_upsample`` times on an axis are skipped (``None``: no
        limit; :mod:`medkit.data.upsample`).

        Raises:
            ConfigError: an option out of range, naming the modality.
        """
        owner = f"modality {self.name}"
        self.depth, self.depth_stride = positive_ints((depth, depth_stride), 2, "depth and depth_stride", owner)
        self.input_size = positive_ints(input_size, 3, "input_size", owner)
        if len(orientation) != 3 or set(orientation.upper()) - set("LRAPIS"):
            raise ConfigError(f"{owner}: orientation must be 3 axcodes such as 'RAS', got {orientation!r}")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ConfigError(f"{owner}: flip_prob must be in [0, 1], got {flip_prob!r}")
        check_on_error(on_error, owner)
        self.orientation = orientation.upper()
        if isinstance(disk_cache, str) and disk_cache.strip().lower() != "auto":
            raise ConfigError(f"{owner}: disk_cache must be true, false or auto, got {disk_cache!r}")
        auto = isinstance(disk_cache, str)
        self.flip_prob, self.on_error = float(flip_prob), on_error
        self.disk_cache: bool | str = "auto" if auto else bool(disk_cache)
        self.max_upsample = check_max_upsample(max_upsample, owner)
        self.cache = VolumeCache(int(cache_bytes), None if cache_size is None else int(cache_size), owner=owner)

    def window_slices(self, vol: Volume) -> int:
        raise NotImplementedError

    def prepare(self, vol: Volume) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, window: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def upsampling(self, vol: Volume) -> tuple[float, str]:
        """How many times ``vol`` is upsampled on its worst axis by :meth:`prepare` (in-plane to
        ``input_size[1:]``, along the slices to the modality's ``spacing`` when it has one and the
        volume more than one slice: a lone slice has no resolution along them to exceed), and its
        own and trained sizes in words."""
        target = getattr(self, "spacing", None)
        depth = resampled_slices(vol.slices, vol.spacing, target)
        x, y = vol.shape[:2] if vol.shape is not None else self.input_size[1:]
        h, w = self.input_size[1:]
        factor = upsample_factor((x, y, vol.slices), (h, w, depth if vol.slices > 1 else 1))
        along = f"{vol.slices} slices {vol.spacing:.3g} mm apart" + \
            (f" to {depth} at {target:g} mm" if target is not None else "")
        return factor, f"{x}×{y} voxels in-plane resized to {h}×{w}, {along}"

    def drop_upsampled(self, volumes: list[Volume], skipped: list[tuple[str, str]]) -> list[Volume]:
        """``volumes`` without those upsampled beyond :attr:`max_upsample` (each added to ``skipped``)."""
        limit = getattr(self, "max_upsample", None)  # a subclass that never called set_window_options
        if limit is None:
            return volumes
        kept = []
        for vol in volumes:
            factor, sizes = self.upsampling(vol)
            if factor <= limit:
                kept.append(vol)
                continue
            where = vol.where + (f', series "{vol.description}"' if vol.description else "")
            record_skip(f"modality {self.name}", skipped, vol.id,
                        upsample_reason(self.name, where, sizes, factor, limit))
        if volumes and not kept:
            raise DataError(f"modality {self.name}: every one of the {len(volumes)} volumes is upsampled beyond "
                            f"max_upsample={limit:g} (first: {skipped[-len(volumes)][1]})")
        return kept

    def _make_disk_cache(self) -> DiskCache:
        return DiskCache(volume_cache_dir(), self.fingerprint())

    def _disk_cache(self) -> DiskCache | None:
        return self._make_disk_cache() if self.disk_cache is True else None

    def dataset(self, data: Path, *, train: bool) -> WindowDataset:
        """Index ``data`` from headers (no pixels are read) into windows of ``depth`` slices."""
        volumes, skipped = find_volumes(Path(data), self.orientation, self.on_error, modality=self.name,
                                        check_modality=getattr(self, "check_modality", True))
        volumes = self.drop_upsampled(volumes, skipped)
        ds = WindowDataset(self.name, Path(data), volumes, [self.window_slices(v) for v in volumes],
                           depth=self.depth, stride=self.depth_stride, prepare=self.prepare,
                           finish=self.finish, train=train, flip_prob=self.flip_prob, skipped=skipped,
                           cache=self.cache, disk_cache=self._disk_cache(), on_error=self.on_error,
                           auto_disk_cache=self._make_disk_cache if self.disk_cache == "auto" else None)
        ds.orientation = self.orientation  # what WindowDataset.raw reorients a volume to
        log.info("%s: %d windows from %d volumes under %s (%d skipped while indexing)", self.name, len(ds),
                 len(volumes), data, len(skipped))
        return ds


def write_nifti_demo(root: Path, names: list[str], make: Any, spacing: tuple[float, float, float],
                     what: str) -> Path:
    """Write ``make(i) -> (array [X, Y, Z], label)`` as NIfTI ``names[i]`` with ``spacing`` mm, and
    ``labels.csv`` last (its presence marks the demo complete), under ``root`` once; later calls
    only check that every file is there. Each file is written atomically (medkit.storage.files)."""
    import nibabel as nib
    import numpy as np

    root = Path(root)
    labels_path = root / "labels.csv"
    if labels_path.is_file() and all((root / n).is_file() for n in names):
        return root
    root.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    rows = []
    for i, name in enumerate(names):
        data, label = make(i)
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm")
        raw = img.to_bytes()  # the whole .nii file
        atomic_write_bytes(root / name, gzip.compress(raw, mtime=0) if name.endswith(".gz") else raw)
        rows.append((name, label))
    write_csv(labels_path, ["id", "label"], rows)
    log.info("wrote %d demo %s volumes to %s", len(names), what, root)
    return root
