"""The hash split by source: windows of one volume and tiles of one patient never straddle the
split; seeded; stable when files are added; independent of order."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from medkit.api.errors import DataError
from medkit.data.split import sources_of, split_by_source, split_indices, split_three


def _sides(sources: list[str], train: list[int], val: list[int]) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = defaultdict(set)
    for i in train:
        sides[sources[i]].add("train")
    for i in val:
        sides[sources[i]].add("val")
    return sides


@pytest.mark.parametrize("modality", ["ct", "mri", "pathology"])
def test_demo_sources_are_never_on_both_sides(modality: str, tmp_path: Path) -> None:
    from medkit.registry import create

    m = create("modality", modality)
    ds = m.dataset(m.demo_data(tmp_path / "demo"), train=False)
    sources = sources_of(ds)
    assert len(sources) == len(ds.ids) and len(set(sources)) < len(sources)  # several samples per source
    for seed in range(5):
        train, val = split_by_source(ds.ids, sources, 0.2, seed)
        assert sorted(train + val) == list(range(len(ds)))
        assert val and train
        assert all(len(s) == 1 for s in _sides(sources, train, val).values())


def test_ct_windows_belong_to_their_volume_and_the_id_split_leaks(tmp_path: Path) -> None:
    from medkit.registry import create

    m = create("modality", "ct")
    ds = m.dataset(m.demo_data(tmp_path / "demo"), train=False)
    assert all(i.split("#w")[0] == s for i, s in zip(ds.ids, ds.sources))
    train, val = split_indices(ds.ids, 0.1)  # the old per-window split: volumes straddle it
    assert any(len(s) == 2 for s in _sides(ds.sources, train, val).values())


def test_split_is_seeded_stable_and_order_free() -> None:
    sources = [f"vol{k:03d}" for k in range(300)]
    ids = [f"{s}#w{w}" for s in sources for w in range(3)]
    per_sample = [i.split("#")[0] for i in ids]
    _, val = split_by_source(ids, per_sample, 0.1, seed=1)
    held = {per_sample[i] for i in val}
    assert 10 <= len(held) <= 60
    assert held == {per_sample[i] for i in split_by_source(ids, per_sample, 0.1, seed=1)[1]}
    assert held != {per_sample[i] for i in split_by_source(ids, per_sample, 0.1, seed=2)[1]}
    # adding sources never moves an existing one; reversing the order changes nothing
    more = per_sample + [f"new{k}" for k in range(100)]
    _, val_more = split_by_source(more, more, 0.1, seed=1)
    assert {more[i] for i in val_more} & set(sources) == held
    rev = per_sample[::-1]
    assert {rev[i] for i in split_by_source(rev, rev, 0.1, seed=1)[1]} == held


def test_small_and_mismatched_inputs() -> None:
    assert split_by_source([], [], 0.1, 0) == ([], [])
    train, val = split_by_source(["a#0", "a#1", "b#0"], ["a", "a", "b"], 0.0001, 0)
    assert len({("a", "b")[0] if i < 2 else "b" for i in val}) == 1 and train
    assert split_by_source(["x", "y"], ["s", "s"], 0.5, 0)[1] == []  # one source cannot be split
    with pytest.raises(DataError, match="sources"):
        split_by_source(["a", "b"], ["a"], 0.1, 0)


def test_three_way_split_keeps_groups_together() -> None:
    ids = [f"p{k}/t{t}" for k in range(20) for t in range(4)]
    groups = [i.split("/")[0] for i in ids]
    parts = split_three(ids, val_fraction=0.2, test_fraction=0.2, origin="x", sources=groups)
    sides = defaultdict(set)
    for name, idx in parts.items():
        for i in idx:
            sides[groups[i]].add(name)
    assert all(len(s) == 1 for s in sides.values()) and all(parts.values())
