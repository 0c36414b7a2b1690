"""Prepared data on disk: the manifest, the preprocessing config it was made with, and reading its shards."""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from medkit.api.errors import ConfigError, DataError
from medkit.data import remote
from medkit.data.prepared_chunks import MAPPED_PARTS, LocalPart

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "medkit-prepared"
FORMAT_VERSION = 1
#: The options of a modality that act at load time (random augmentation, caches, error policy):
#: they may differ between ``medkit prepare`` and the run that trains on its output.
LOAD_TIME_KEYS = frozenset({"crop_scale", "hflip", "normalize", "flip_prob", "on_error", "verify", "disk_cache",
                            "cache", "cache_size", "cache_bytes"})
#: litdata leaf formats a prepared part may hold: arrays and scalars only. Anything else (litdata
#: also knows ``pickle``) is refused before a reader is opened — nothing executable from received files.
SAFE_LEAF_FORMATS = frozenset({"numpy", "no_header_numpy", "int", "str", "float", "bool"})


def medkit_version() -> str:
    """The installed medkit version (``0+unknown`` from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medkit")
    except PackageNotFoundError:
        return "0+unknown"


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON (tuples → lists), or ``None`` when it is not data (objects, callables)."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return None


def preprocessing_config(modality: Any, storage: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options of ``modality`` that change what :func:`medkit.data.prepare.prepare` writes.

    A modality may define ``preprocessing_config()`` itself. A windowed 3D modality's are its
    ``fingerprint()`` (what its disk cache is keyed by), ``input_size`` and ``depth_stride``; a 2D
    modality's are its public data attributes (readers, filters, tiling) and ``folder_labels``,
    without the load-time options of :data:`LOAD_TIME_KEYS` (crops, flips, normalisation). With a
    ``storage`` whose 2D ``canvas`` is ``view`` (the samples are stored at ``input_size``²), the
    stored size joins them as ``input_size``.
    """
    out = _own_config(modality)
    if (storage or {}).get("canvas") == "view":
        out["input_size"] = int(modality.options.input_size)
    return out


def _own_config(modality: Any) -> dict[str, Any]:
    own = getattr(modality, "preprocessing_config", None)
    if callable(own):
        return dict(own())
    out: dict[str, Any] = {"modality": str(getattr(modality, "name", ""))}
    fingerprint = getattr(modality, "fingerprint", None)
    if callable(fingerprint):
        out.update(json.loads(fingerprint()))
        out["input_size"] = [int(v) for v in modality.input_size]
        out["depth_stride"] = int(modality.depth_stride)
        return out
    for key, value in sorted(vars(modality).items()):
        if key.startswith("_") or key in LOAD_TIME_KEYS or key == "options":
            continue
        plain = _jsonable(value)
        if plain is not None or value is None:
            out[key] = plain
    options = getattr(modality, "options", None)
    if options is not None:
        out["folder_labels"] = bool(getattr(options, "folder_labels", False))
    return out


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a preprocessing config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``medkit prepare`` (it holds a prepared manifest).
    A URL (:func:`medkit.data.remote.is_url`) is always taken for prepared data: only prepared data
    is read remotely, and :func:`read_manifest` says what is wrong with one that is not."""
    if remote.is_url(str(path)):
        return True
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a prepared folder or URL (read through litdata's client for its scheme),
    checked for its format and version.

    Raises:
        DataError: naming the file when it is unreadable, of another format or of a newer version,
            or the package to install when a URL's client library is missing.
    """
    location = remote.normalise(path)
    file = remote.join(location, MANIFEST)
    try:
        manifest = json.loads(remote.read_bytes(location, MANIFEST))
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: cannot read the prepared-data manifest ({exc}); run medkit prepare again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{file}: not a medkit prepared-data manifest (format {manifest.get('format')!r})")
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise DataError(f"{file}: prepared-data format version {manifest['version']} is newer than this medkit "
                        f"reads ({FORMAT_VERSION}); upgrade medkit or prepare the data again")
    n = int(manifest.get("num_samples", -1))
    if not all(len(manifest.get(k) or []) == n for k in ("ids", "sources")) or \
            sum(int(p["count"]) for p in manifest.get("parts", [])) != n:
        raise DataError(f"{file}: the manifest's sample lists and part counts disagree; prepare the data again")
    return manifest


def check_config(manifest: dict[str, Any], modality: Any, where: str) -> None:
    """Refuse prepared data made with another preprocessing config than ``modality``'s.

    Raises:
        ConfigError: one line naming the first key that differs, both values and the fix.
    """
    made, now = manifest.get("preprocessing", {}), preprocessing_config(modality, manifest.get("storage"))
    name = now.get("modality") or manifest.get("modality")
    if manifest.get("modality") != getattr(modality, "name", None):
        raise ConfigError(f"{where} was prepared for modality {manifest.get('modality')!r}, not "
                          f"{getattr(modality, 'name', None)!r}; pass it as --data {manifest.get('modality')}=PATH")
    for key in sorted(set(made) | set(now)):
        if made.get(key) != now.get(key):
            raise ConfigError(f"{where} was prepared with modality.{name}.{key}={json.dumps(made.get(key))} but this "
                              f"run has {json.dumps(now.get(key))}; set modality.{name}.{key}="
                              f"{json.dumps(made.get(key))} or run medkit prepare again with the run's config")


def read_part_index(part: str | Path) -> dict[str, Any]:
    """The litdata ``index.json`` of a part (a folder or URL), checked by :func:`check_part_format`."""
    location = str(part)
    index = remote.join(location, "index.json")
    try:
        content = json.loads(remote.read_bytes(location, "index.json"))
        if not isinstance(content["config"]["data_format"], list) or not isinstance(content["chunks"], list):
            raise TypeError("config.data_format and chunks must be lists")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{index}: unreadable litdata index ({exc}); prepare the data again") from exc
    check_part_format(part, content)
    return content


def check_part_format(part: str | Path, content: dict[str, Any] | None = None) -> None:
    """Refuse a part whose litdata index declares a leaf format other than arrays and scalars.

    Raises:
        DataError: naming the index file and the format.
    """
    index = remote.join(str(part), "index.json")
    if content is None:
        content = read_part_index(part)
    formats = content["config"]["data_format"]
    bad = [f for f in formats if str(f).split(":", 1)[0] not in SAFE_LEAF_FORMATS]
    if bad:
        raise DataError(f"{index}: declares the leaf format(s) {bad}; medkit reads only "
                        f"{sorted(SAFE_LEAF_FORMATS)} (never pickled objects) — prepare the data again with medkit")


class PartReader:
    """Random access by global sample index over the litdata parts of a prepared folder.

    Each part is opened on first use in the process that reads (DataLoader workers open their own;
    nothing open is ever pickled): a local part in the plain layout ``medkit prepare`` writes as a
    :class:`~medkit.data.prepared_chunks.LocalPart` (items are views of its mapped chunks: copy
    before writing), any other as a litdata ``StreamingDataset``. ``root`` may be a URL litdata
    streams from; its chunks are cached under :func:`medkit.data.remote.cache_dir`.
    """

    def __init__(self, root: str | Path, parts: list[dict[str, Any]]) -> None:
        self.root = remote.normalise(root)
        self.dirs = [remote.join(self.root, p["dir"]) for p in parts]
        self.starts = [0]
        for p in parts:
            self.starts.append(self.starts[-1] + int(p["count"]))
        self._open: dict[int, Any] = {}
        self._mapped: OrderedDict[int, None] = OrderedDict()  # the parts read from their mapped chunks, oldest first
        self._recorded = [p.get("chunk_sizes") for p in parts]  # None in manifests written before they were
        self._chunk_sizes: list[int] | None = None

    @staticmethod
    def chunk_sizes_of(part: str, count: int) -> list[int]:
        """Samples per litdata chunk of one part, from its ``index.json``, checked against ``count``.

        Raises:
            DataError: the index and the manifest disagree.
        """
        own = [int(c["chunk_size"]) for c in read_part_index(part)["chunks"]] if count else []
        if sum(own) != count:
            raise DataError(f"{remote.join(part, 'index.json')}: its chunks hold {sum(own)} samples but the "
                            f"manifest counts {count}; prepare the data again")
        return own

    @property
    def chunk_sizes(self) -> list[int]:
        """Samples per litdata chunk, part after part, in sample order (as the manifest records
        them, else from each part's index)."""
        if self._chunk_sizes is None:
            sizes: list[int] = []
            for k, (d, (lo, hi)) in enumerate(zip(self.dirs, zip(self.starts, self.starts[1:]))):
                recorded = self._recorded[k]
                if recorded is not None and sum(int(v) for v in recorded) == hi - lo:
                    sizes += [int(v) for v in recorded]
                else:
                    sizes += self.chunk_sizes_of(d, hi - lo)
            self._chunk_sizes = sizes
        return self._chunk_sizes

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"], state["_mapped"] = {}, OrderedDict()
        return state

    def _part(self, k: int) -> Any:
        ds = self._open.get(k)
        if isinstance(ds, LocalPart):
            self._mapped.move_to_end(k)
        elif ds is None:
            index = read_part_index(self.dirs[k])  # refuses leaf formats other than arrays and scalars
            if not remote.is_url(self.root):
                # the plain layout medkit writes is read from the mapped chunks, without litdata's
                # per-item layers and copy (medkit.data.prepared_chunks); anything else by litdata
                ds = LocalPart.open(self.dirs[k], index)
                if ds is not None:
                    self._open[k], self._mapped[k] = ds, None
                    while len(self._mapped) > MAPPED_PARTS:  # a mapped chunk holds a file descriptor
                        del self._open[self._mapped.popitem(last=False)[0]]
                    return ds
            from litdata import StreamingDataset

            extra: dict[str, Any] = {}
            if remote.is_url(self.root):
                remote.downloader(self.root)  # a missing client library: one line naming what to install
                extra["cache_dir"] = str(remote.cache_dir(self.root) / f"part-{k:05d}")
            # batch_decode=0: decode the one item asked for (its default decodes a window of rows
            # ahead, which sequential iteration amortises but random access by index pays each time)
            ds = self._open[k] = StreamingDataset(self.dirs[k], batch_decode=0, **extra)
        return ds

    def read(self, index: int) -> dict[str, np.ndarray]:
        """The stored item of global sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"prepared sample {index} out of range (0..{len(self) - 1})")
        k = bisect.bisect_right(self.starts, index) - 1
        return self._part(k)[int(index - self.starts[k])]
