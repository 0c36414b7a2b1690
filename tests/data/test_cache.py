"""Known answers for the in-memory volume cache: byte and count bounds, LRU order, views."""

from __future__ import annotations

import pytest
import torch

from medkit.api.errors import ConfigError
from medkit.data.cache import VolumeCache, storage_bytes


def _t(n_floats: int, value: float = 0.0) -> torch.Tensor:
    return torch.full((n_floats,), value, dtype=torch.float32)  # 4 bytes each


def test_byte_bound_evicts_least_recently_used() -> None:
    cache = VolumeCache(max_bytes=100)
    for key in "abc":
        assert cache.put(key, _t(8))  # 32 bytes each: 96 in all
    assert cache.nbytes == 96 and len(cache) == 3
    assert cache.get("a") is not None  # "a" is now the most recent, "b" the least
    assert cache.put("d", _t(8))  # 128 > 100: "b" goes
    assert "b" not in cache and all(k in cache for k in "acd")
    assert cache.nbytes == 96
    assert (cache.hits, cache.misses) == (1, 0)
    assert cache.get("b") is None and cache.misses == 1


def test_count_bound_and_replacing_a_key() -> None:
    cache = VolumeCache(max_bytes=10_000, max_items=2)
    cache.put("a", _t(4))
    cache.put("b", _t(4))
    cache.put("a", _t(10, 1.0))  # replaces, does not grow the count
    assert len(cache) == 2 and cache.nbytes == 56
    cache.put("c", _t(4))
    assert list(cache._items) == ["a", "c"]
    assert float(cache.get("a")[0]) == 1.0


def test_too_large_or_disabled_is_not_kept() -> None:
    cache = VolumeCache(max_bytes=16)
    assert not cache.put("big", _t(5)) and len(cache) == 0 and cache.nbytes == 0
    for off in (VolumeCache(max_bytes=0), VolumeCache(max_items=0)):
        assert not off.put("a", _t(1)) and len(off) == 0


def test_a_view_is_stored_as_a_compact_copy() -> None:
    parent = torch.arange(1000, dtype=torch.float32)
    view = parent[10:20]
    cache = VolumeCache(max_bytes=100)
    assert storage_bytes(view) == 4000
    assert cache.put("v", view)
    kept = cache.get("v")
    assert torch.equal(kept, parent[10:20]) and storage_bytes(kept) == 40 and cache.nbytes == 40


@pytest.mark.parametrize("kwargs", [{"max_bytes": -1}, {"max_items": -2}])
def test_negative_bounds_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="modality ct: cache_"):
        VolumeCache(owner="modality ct", **kwargs)
