"""Random access without copies to the items of a local litdata part in the plain layout ``medkit prepare`` writes."""

from __future__ import annotations

import bisect
import json
import math
import mmap
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from medkit.api.errors import DataError

#: Chunk files kept mapped per part, and parts kept open per prepared folder (a mapping holds a
#: file descriptor; the chunk-aware step plan reads from 4 chunks at a time, so these always suffice).
MAPPED_CHUNKS = 8
MAPPED_PARTS = 16
_U32 = struct.Struct("<I")


def _dtypes() -> dict[int, np.dtype]:
    """litdata's numpy dtype codes (its own table, so that the codes always match the writer's)."""
    from litdata.constants import _NUMPY_DTYPES_MAPPING

    return dict(_NUMPY_DTYPES_MAPPING)


def _dict_keys(data_spec: str, leaves: int) -> list[str] | None:
    """The keys of a flat dict of ``leaves`` leaves from litdata's ``data_spec`` (the pytree spec of
    what ``medkit prepare`` writes), or ``None`` for any other structure."""
    try:
        protocol, spec = json.loads(data_spec)  # torch's pytree serialisation: [protocol, the tree]
        keys, children = json.loads(spec["context"]), spec["children_spec"]
        flat = all(c.get("type") is None and not c.get("children_spec") for c in children)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    ok = protocol == 1 and spec.get("type") == "builtins.dict" and flat and leaves == len(keys) == len(children)
    return [str(k) for k in keys] if ok and all(isinstance(k, str) for k in keys) else None


class LocalPart:
    """The items of one local part, read straight from its memory-mapped chunk files.

    litdata's ``StreamingDataset`` serves each item through several layers of Python (its cache,
    reader and item loader) and then copies the array out of the chunk: ~15 µs per 2D item and the
    whole 1.2 MB of a CT window, a large share of a prepared sample's load. This reader handles
    only the plain layout of litdata's binary chunk format, which is what ``medkit prepare``
    writes — per chunk ``num_items`` (uint32), ``num_items + 1`` item offsets (uint32), the items;
    per item one uint32 size per leaf, then the leaves; a ``numpy`` leaf is its dtype code, ``ndim``,
    the shape (uint32 each) and the C-order data; a ``no_header_numpy:<code>`` leaf only the data —
    and :meth:`open` returns ``None`` for anything else (compression, encryption, other leaf
    formats or structures, framed or footed chunks), which litdata then reads.

    Items are numpy arrays viewing a private (copy-on-write) mapping of the chunk: nothing is copied
    to hand them out, and a caller must copy before it writes (medkit's loaders convert, crop or
    flip into new arrays, never in place), as a write would be seen by later reads of that item in
    this process (never by the file).
    """

    def __init__(self, directory: Path, keys: list[str], formats: list[str],
                 chunks: list[tuple[str, int]]) -> None:
        self.directory, self.keys, self.formats = directory, keys, formats
        self.files = [directory / name for name, _ in chunks]
        self.counts = [n for _, n in chunks]
        self.starts = [0]
        for n in self.counts:
            self.starts.append(self.starts[-1] + n)
        table = _dtypes()
        self._fixed = [table[int(f.split(":", 1)[1])] if f.startswith("no_header_numpy:") else None
                       for f in formats]
        self._table = table
        self._sizes = struct.Struct(f"<{len(formats)}I")
        self._mapped: OrderedDict[int, tuple[memoryview, list[int]]] = OrderedDict()

    @classmethod
    def open(cls, directory: str | Path, index: dict[str, Any]) -> LocalPart | None:
        """A reader of the part in local folder ``directory`` with litdata index ``index``, or
        ``None`` when the index declares anything but the plain layout (litdata reads those)."""
        config = index.get("config") or {}
        if any(config.get(k) for k in ("compression", "encryption", "compression_level", "ipc_compression",
                                        "format")) or config.get("item_loader") != "PyTreeLoader":
            return None
        formats = [str(f) for f in config.get("data_format") or []]
        table = _dtypes()
        for f in formats:
            kind, _, code = f.partition(":")
            if not (f == "numpy" or (kind == "no_header_numpy" and code.isdigit() and int(code) in table)):
                return None
        keys = _dict_keys(str(config.get("data_spec", "")), len(formats))
        if keys is None or not formats:
            return None
        try:
            chunks = [(str(c["filename"]), int(c["chunk_size"])) for c in index["chunks"]]
        except (KeyError, TypeError, ValueError):
            return None
        return cls(Path(directory), keys, formats, chunks)

    def __len__(self) -> int:
        return self.starts[-1]

    def _chunk(self, k: int) -> tuple[memoryview, list[int]]:
        got = self._mapped.get(k)
        if got is not None:
            self._mapped.move_to_end(k)
            return got
        path = self.files[k]
        try:
            with open(path, "rb") as fh:
                data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot map the prepared chunk ({exc}); prepare the data again") from exc
        view = memoryview(data)
        n = _U32.unpack_from(view, 0)[0] if len(view) >= 4 else -1
        offsets = np.frombuffer(view, np.uint32, count=n + 1, offset=4).tolist() if n == self.counts[k] else []
        if not offsets or offsets[0] != 4 * (n + 2) or offsets[-1] != len(view) or offsets != sorted(offsets):
            raise DataError(f"{path}: its header does not match the part's index.json ({self.counts[k]} items); "
                            "prepare the data again")
        # evicted mappings are not closed: arrays handed out may still view them (they close with the last one)
        self._mapped[k] = (view, offsets)
        while len(self._mapped) > MAPPED_CHUNKS:
            self._mapped.popitem(last=False)
        return view, offsets

    def read(self, j: int, k: int) -> dict[str, np.ndarray]:
        """Item ``j`` of chunk ``k`` (its index within the chunk)."""
        view, offsets = self._chunk(k)
        pos, end = offsets[j], offsets[j + 1]
        sizes = self._sizes.unpack_from(view, pos)
        pos += self._sizes.size
        if pos + sum(sizes) != end:
            raise DataError(f"{self.files[k]}: item {j} is damaged (its sizes do not add up); prepare the data again")
        out: dict[str, np.ndarray] = {}
        for key, size, fixed in zip(self.keys, sizes, self._fixed):
            if fixed is not None:
                out[key] = np.frombuffer(view, fixed, count=size // fixed.itemsize, offset=pos)
            else:
                code, ndim = struct.unpack_from("<II", view, pos)
                shape = struct.unpack_from(f"<{ndim}I", view, pos + 8)
                dtype = self._table[code]
                head = 8 + 4 * ndim
                count = math.prod(shape)
                if head + count * dtype.itemsize != size:
                    raise DataError(f"{self.files[k]}: item {j} is damaged (leaf {key!r}); prepare the data again")
                out[key] = np.frombuffer(view, dtype, count=count, offset=pos + head).reshape(shape)
            pos += size
        return out

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Item ``i`` of the part (its index within the part)."""
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range of {self.directory} ({len(self)} items)")
        k = bisect.bisect_right(self.starts, i) - 1
        return self.read(i - self.starts[k], k)
