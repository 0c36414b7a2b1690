"""``disk_cache=auto``: a 3D archive larger than the memory cache gets its preprocessed volumes on disk."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable, Sequence

from medkit.data.cache import DiskCache, VolumeCache

log = logging.getLogger(__name__)

#: The disk cache is turned on only where the file system keeps this share of its free space free.
FREE_SHARE = 0.5


def archive_bytes(depths: Sequence[int], shape: Sequence[int]) -> int:
    """Bytes of every volume prepared, as the disk cache stores them (float32), from the shape
    ``[C, D, H, W]`` of one prepared volume and each volume's prepared depth."""
    per_slice = 4 * int(shape[0]) * int(shape[2]) * int(shape[3])
    return per_slice * int(sum(int(d) for d in depths))


def _free_bytes(folder: Path) -> int:
    """Free bytes of the file system ``folder`` is (or will be) on."""
    here = Path(folder)
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        return int(shutil.disk_usage(here).free)
    except OSError:
        return 0


def auto_disk_cache(modality: str, depths: Sequence[int], shape: Sequence[int], cache: VolumeCache,
                    make: Callable[[], DiskCache]) -> DiskCache | None:
    """The disk cache ``make()`` when the archive, prepared, does not fit ``cache``, else ``None``.

    Why: the step plan shuffles windows over the whole archive, so with a memory cache smaller than
    the archive nearly every window would find its volume evicted and prepare the whole volume
    again (measured: 0.77 windows/s per core for 512²×200 CT). On disk, each volume is prepared once
    and every later window reads only its own slices. The disk cache then holds at most one
    float32 file per volume of the archive (the size logged here); it is not turned on when that
    would fill more than half of the free space, and a warning says so.
    """
    need = archive_bytes(depths, shape)
    fits = cache.max_bytes > 0 and cache.max_items != 0 and need <= cache.max_bytes and (
        cache.max_items is None or len(depths) <= cache.max_items)
    if fits:
        return None
    disk = make()
    free = _free_bytes(disk.folder)
    gib = need / 2**30
    if need > FREE_SHARE * free:
        log.warning("%s: the %d preprocessed volumes (%.2f GiB) exceed the memory cache (%.2f GiB), but the "
                    "disk cache %s has only %.2f GiB free: windows will prepare their volume again when it was "
                    "evicted (free space, set modality.%s.cache_bytes, or use medkit prepare)", modality,
                    len(depths), gib, cache.max_bytes / 2**30, disk.folder, free / 2**30, modality)
        return None
    log.info("%s: the %d preprocessed volumes (%.2f GiB) exceed the memory cache (%.2f GiB); each is written "
             "once to the disk cache %s and windows read their slices from there (modality.%s.disk_cache=false "
             "turns this off)", modality, len(depths), gib, cache.max_bytes / 2**30, disk.folder, modality)
    return disk

