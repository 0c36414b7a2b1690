"""Caches of preprocessed volumes: an in-memory LRU bounded by bytes and an opt-in float32 disk cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import Hashable, Sequence

import torch

from medkit.api.errors import CheckpointError, ConfigError
from medkit.storage.files import atomic_write_file

log = logging.getLogger(__name__)

#: Default bound of :class:`VolumeCache`: 1 GiB of preprocessed voxels.
DEFAULT_CACHE_BYTES = 1 << 30
#: Bumped whenever the layout of the disk cache files changes (old files are then never read).
DISK_FORMAT = 1
_TENSOR = "volume"


def volume_cache_dir() -> Path:
    """Folder of the disk cache: ``$MEDKIT_CACHE_DIR/volumes``, else ``~/.cache/medkit/volumes``."""
    env = os.environ.get("MEDKIT_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "medkit") / "volumes"


def storage_bytes(x: torch.Tensor) -> int:
    """Bytes held alive by ``x``: its whole storage (a slice keeps its parent's storage)."""
    return int(x.untyped_storage().nbytes())


class VolumeCache:
    """Least-recently-used tensors, bounded by their total bytes and optionally by their number.

    A tensor larger than ``max_bytes`` is never kept. A view that holds a larger storage is copied
    first, so the bound counts what stays in memory.

    Args:
        max_bytes: total bytes kept; 0 disables the cache.
        max_items: tensors kept at most; ``None`` for no limit besides ``max_bytes``, 0 disables.
        owner: who configured it, for error messages (e.g. ``"modality ct"``).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, max_items: int | None = None, *,
                 owner: str = "volume cache") -> None:
        if int(max_bytes) < 0:
            raise ConfigError(f"{owner}: cache_bytes must be >= 0 (0 disables the cache), got {max_bytes!r}")
        if max_items is not None and int(max_items) < 0:
            raise ConfigError(f"{owner}: cache_size must be >= 0 or null (no count limit), got {max_items!r}")
        self.max_bytes = int(max_bytes)
        self.max_items = None if max_items is None else int(max_items)
        self.nbytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The tensor stored under ``key`` (now the most recently used), or ``None``."""
        x = self._items.get(key)
        if x is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return x

    def put(self, key: Hashable, x: torch.Tensor) -> bool:
        """Keep ``x`` under ``key``, evicting the least recently used; ``False`` if it is not kept."""
        if key in self._items:
            self.nbytes -= storage_bytes(self._items.pop(key))
        if self.max_items == 0 or self.max_bytes == 0:
            return False
        if x.nbytes > self.max_bytes:
            log.debug("%s: a %.1f MiB tensor exceeds the cache bound of %.1f MiB; not cached",
                      key, x.nbytes / 2**20, self.max_bytes / 2**20)
            return False
        if storage_bytes(x) != x.nbytes or not x.is_contiguous():
            x = x.clone(memory_format=torch.contiguous_format)
        self._items[key] = x
        self.nbytes += storage_bytes(x)
        while self.nbytes > self.max_bytes or (self.max_items is not None and len(self._items) > self.max_items):
            _, old = self._items.popitem(last=False)
            self.nbytes -= storage_bytes(old)
        return True

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


class DiskCache:
    """Preprocessed volumes as float32 safetensors files under ``folder``.

    A file is named by a hash of the source files' contents, the preprocessing ``fingerprint``
    (every option that changes the preprocessed values) and the versions of the readers, so a
    changed file or option is never served stale data. Files are written atomically; an unreadable
    one is removed and rebuilt. The folder can be deleted at any time.
    """

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder, self.fingerprint = Path(folder), str(fingerprint)
        self._readers = {d: _version(d) for d in ("monai", "nibabel", "pydicom", "torch")}
        self._names: dict[tuple[str, ...], str] = {}

    @staticmethod
    def _file_hash(path: str) -> str:
        h = hashlib.blake2b(digest_size=20)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    def path_for(self, sources: Sequence[str]) -> Path:
        """The cache file of the volume read from ``sources`` (its file, or its slices)."""
        key = tuple(str(s) for s in sources)
        if key not in self._names:
            blob = json.dumps({"format": DISK_FORMAT, "prep": self.fingerprint, "readers": self._readers,
                               "files": [self._file_hash(s) for s in key]}, sort_keys=True)
            self._names[key] = hashlib.blake2b(blob.encode(), digest_size=20).hexdigest()
        name = self._names[key]
        return self.folder / name[:2] / f"{name}.safetensors"

    def read(self, sources: Sequence[str], start: int | None = None, stop: int | None = None
             ) -> torch.Tensor | None:
        """The cached volume (or its slices ``start:stop`` of axis 1), or ``None`` when absent."""
        from safetensors import safe_open

        path = self.path_for(sources)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                if start is None:
                    return fh.get_tensor(_TENSOR)
                return fh.get_slice(_TENSOR)[:, start:stop]
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is rebuilt, never fatal
            log.warning("%s: unreadable volume cache file (%s); removing it", path, exc)
            path.unlink(missing_ok=True)
            return None

    def shape(self, sources: Sequence[str]) -> tuple[int, ...] | None:
        """Shape of the cached volume, read from the file header only, or ``None``."""
        from safetensors import safe_open

        path = self.path_for(sources)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                return tuple(int(s) for s in fh.get_slice(_TENSOR).get_shape())
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is removed, never fatal
            log.warning("%s: unreadable volume cache file (%s); removing it", path, exc)
            path.unlink(missing_ok=True)
            return None

    def write(self, sources: Sequence[str], x: torch.Tensor) -> None:
        """Store ``x`` (as float32) for ``sources``; a failed write is logged, never raised."""
        from safetensors.torch import save_file

        path = self.path_for(sources)
        tensors = {_TENSOR: x.detach().to(torch.float32).contiguous()}
        try:
            atomic_write_file(path, lambda tmp: save_file(tensors, tmp))
        except CheckpointError as exc:  # the temp file is already removed
            log.warning("%s: cannot write the volume cache (%s); continuing without it", path, exc)
