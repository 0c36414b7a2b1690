"""The mapped-chunk reader of local prepared parts: litdata's items exactly, litdata itself for anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("litdata")

from litdata import StreamingDataset
from litdata.streaming.writer import BinaryWriter

from medkit.api.errors import DataError
from medkit.data import prepared_chunks
from medkit.data.prepared import PartReader, read_part_index
from medkit.data.prepared_chunks import LocalPart


def _write(folder: Path, items: list[dict[str, Any]], chunk_bytes: int = 1 << 20, **kwargs: Any) -> Path:
    writer = BinaryWriter(str(folder), chunk_bytes=chunk_bytes, **kwargs)
    for i, item in enumerate(items):
        writer[i] = item
    writer.done()
    writer.merge()
    return folder


def _items(n: int) -> list[dict[str, Any]]:
    """Every kind of leaf medkit stores: 2D/3D arrays (``numpy``), 1-D arrays (``no_header_numpy``)."""
    rng = np.random.default_rng(0)
    return [{"x": rng.integers(0, 65535, (24, 24), dtype=np.uint16),
             "w": rng.random((1, 3, 8, 8)).astype(np.float16),
             "box": rng.random(4), "ids": rng.integers(0, 30000, 5 + i % 7, dtype=np.uint16)} for i in range(n)]


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                                        and np.array_equal(a[k], b[k]) for k in a)


def test_items_are_litdatas_across_chunks(tmp_path):
    """Several chunks (small chunk_bytes): every item equals litdata's own read, dtype and shape
    included, in any order; nothing is copied (views of the mapping) and out of range is refused."""
    part = _write(tmp_path / "p", _items(40), chunk_bytes=4096)
    index = read_part_index(part)
    assert len(index["chunks"]) > 3
    local, ref = LocalPart.open(part, index), StreamingDataset(str(part), batch_decode=0)
    assert local is not None and len(local) == len(ref) == 40
    for i in [*range(40), 39, 0, 17, 3, 38]:
        got = local[i]
        assert _same(got, ref[i]), i
        assert not got["x"].flags.owndata
    with pytest.raises(IndexError):
        local[40]


def test_prepared_parts_read_through_mapped_chunks_and_keep_few_open(tmp_path, monkeypatch):
    """PartReader reads local parts through LocalPart, equal to litdata; no more than MAPPED_PARTS
    parts stay open (each holds file descriptors), and a part dropped opens again on its next read."""
    monkeypatch.setattr(prepared_chunks, "MAPPED_PARTS", 2)
    monkeypatch.setattr("medkit.data.prepared.MAPPED_PARTS", 2)
    items = _items(12)
    parts = [{"dir": f"parts/part-{k}", "count": 4} for k in range(3)]
    for k in range(3):
        _write(tmp_path / parts[k]["dir"], items[4 * k:4 * k + 4])
    reader = PartReader(tmp_path, parts)
    for i in [0, 5, 9, 1, 11, 6, 2]:
        assert _same(reader.read(i), items[i]), i
        assert isinstance(reader._part(i // 4), LocalPart)
        assert len([p for p in reader._open.values() if isinstance(p, LocalPart)]) <= 2


def test_other_layouts_are_left_to_litdata(tmp_path):
    """Compressed chunks and structures other than a flat dict of arrays are not read by hand:
    LocalPart.open declines, so PartReader reads them through litdata, with the same items."""
    items = _items(6)
    declined = {"list": _write(tmp_path / "list", [[it["x"], it["box"]] for it in items]),
                "nested": _write(tmp_path / "nested", [{"a": {"x": it["x"]}} for it in items])}
    try:
        declined["zstd"] = _write(tmp_path / "zstd", items, compression="zstd")
    except ValueError:  # litdata has no zstd codec here: that case cannot be written
        pass
    for name, part in declined.items():
        assert LocalPart.open(part, read_part_index(part)) is None, name
    reader = PartReader(tmp_path, [{"dir": "nested", "count": 6}])
    assert np.array_equal(reader.read(3)["a"]["x"], items[3]["x"])
    assert isinstance(reader._part(0), StreamingDataset)


def test_a_damaged_chunk_is_refused_naming_the_file(tmp_path):
    part = _write(tmp_path / "p", _items(5))
    chunk = next(part.glob("chunk-*.bin"))
    data = bytearray(chunk.read_bytes())
    data[0:4] = (99).to_bytes(4, "little")  # a header that disagrees with index.json
    chunk.write_bytes(bytes(data))
    local = LocalPart.open(part, read_part_index(part))
    assert local is not None
    with pytest.raises(DataError, match=chunk.name):
        local[0]


def test_prepared_ct_windows_are_the_stored_window_converted_then_flipped(tmp_path):
    """A 3D sample: the stored float16 window as float32, flipped by seeded_flips with the sample's
    seed (bit for bit, every flip combination met), in a tensor that owns its memory."""
    import torch

    from medkit.data.prepare import prepare
    from medkit.data.prepared_dataset import open_prepared
    from medkit.data.windows import flip_dims, seeded_flips
    from medkit.registry import create

    mod = create("modality", "ct", input_size=[16, 32, 32])
    prepare(mod, Path(mod.demo_data(tmp_path / "demo")), tmp_path / "p", part_size=64)
    ds = open_prepared(mod, tmp_path / "p", train=True)
    seen = set()
    for i, seed in [(i, 1000 + 31 * i + r) for r in range(3) for i in range(0, len(ds), 3)] + [(0, None)]:
        stored = torch.from_numpy(np.array(ds.reader.read(i)["x"]))
        want = stored.to(torch.float32) if seed is None else seeded_flips(stored.to(torch.float32), seed, mod.flip_prob)
        got = ds.load(i, seed)["input"]
        assert got.dtype == torch.float32 and got.is_contiguous() and torch.equal(got, want), (i, seed)
        got.add_(1.0)  # the sample owns its memory: the stored item is unchanged
        assert torch.equal(torch.from_numpy(np.array(ds.reader.read(i)["x"])), stored)
        seen.add(tuple(flip_dims(seed, mod.flip_prob)) if seed is not None else None)
    assert len(seen) >= 6, seen
