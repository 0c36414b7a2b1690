"""Chunk-aware step plans for sources stored in chunks (prepared data)."""

from __future__ import annotations

import pytest
import torch

from medkit.api.batch import Source
from medkit.engine.chunk_plan import chunk_of, chunk_permutation, declared_chunks
from medkit.engine.plan import StepPlan, _generator

SIZES = [7, 5, 9, 3, 8, 6, 10, 4, 2, 6]  # uneven chunks, as litdata cuts them by bytes (60 samples)


def _epoch(plan: StepPlan, steps: int) -> list[int]:
    return [i for s in range(steps) for i in plan.step(s)[1]]


def _open_chunks(order: list[int], sizes: list[int]) -> int:
    """The most chunks begun but not finished at any point of ``order``."""
    chunk = chunk_of(order, sizes)
    left = {c: chunk.count(c) for c in set(chunk)}
    open_now: set[int] = set()
    worst = 0
    for c in chunk:
        open_now.add(c)
        worst = max(worst, len(open_now))
        left[c] -= 1
        if not left[c]:
            open_now.discard(c)
    return worst


def test_chunk_of_maps_indices_to_their_chunk_and_refuses_outsiders():
    assert chunk_of([0, 6, 7, 11, 12, 59], SIZES) == [0, 0, 1, 1, 2, 9]
    with pytest.raises(IndexError):
        chunk_of([60], SIZES)


@pytest.mark.parametrize("window", [1, 2, 4])
def test_chunk_aware_epoch_is_a_permutation_and_chunk_local(window):
    n = sum(SIZES)
    plan = StepPlan([Source("x", list(range(n)))], batch_size=6, max_steps=30, seed=1, stage=0,
                    chunk_sizes={"x": SIZES}, chunk_window=window)
    for epoch in range(3):  # 10 steps of 6 = one epoch of 60
        order = [i for s in range(10 * epoch, 10 * epoch + 10) for i in plan.step(s)[1]]
        assert sorted(order) == list(range(n)), "every sample once per epoch"
        assert _open_chunks(order, SIZES) <= window, f"more than {window} chunks in use at once"
    plain = StepPlan([Source("x", list(range(n)))], batch_size=6, max_steps=10, seed=1, stage=0)
    assert _open_chunks(_epoch(plain, 10), SIZES) > 4, "the folder path's permutation is not chunk-local"


def test_chunk_aware_plan_on_a_subset_of_the_dataset():
    """A split or a buffer draws from a subset of the stored samples: still a permutation of the subset."""
    indices = [i for i in range(sum(SIZES)) if i % 3 != 1]
    plan = StepPlan([Source("x", indices)], batch_size=5, max_steps=8, seed=4, stage=2, chunk_sizes={"x": SIZES})
    order = _epoch(plan, 8)
    assert sorted(order) == sorted(indices)
    assert _open_chunks(order, SIZES) <= 4


def test_chunk_aware_plan_is_deterministic_per_seed_and_shuffles():
    n = sum(SIZES)
    make = lambda seed: StepPlan([Source("x", list(range(n)))], batch_size=4, max_steps=45, seed=seed,
                                 stage=0, chunk_sizes={"x": SIZES})
    a, b, c = _epoch(make(7), 45), _epoch(make(7), 45), _epoch(make(8), 45)
    assert a == b
    assert a != c
    assert a[:n] != a[n:2 * n], "each epoch has its own permutation"
    assert a[:n] != sorted(a[:n]), "samples are shuffled, not read in order"


@pytest.mark.parametrize("world", [2, 4])
def test_global_batches_are_the_same_under_every_world_size(world):
    """Concatenating the ranks' slices gives the one-process plan's batches, step by step."""
    n, global_bs = sum(SIZES), 8
    srcs = [Source("x", list(range(n))), Source("y", list(range(30)), role="buffer")]
    kw = dict(max_steps=40, seed=3, stage=1, chunk_sizes={"x": SIZES}, min_current_fraction=0.5)
    one = StepPlan(srcs, batch_size=global_bs, **kw)
    ranks = [StepPlan(srcs, batch_size=global_bs // world, rank=r, world_size=world, **kw) for r in range(world)]
    for s in range(40):
        src, want, seeds = one.step(s)
        parts = [r.step(s) for r in ranks]
        assert [p[0].modality for p in parts] == [src.modality] * world
        assert [i for p in parts for i in p[1]] == want
        assert [k for p in parts for k in p[2]] == seeds


def test_a_resumed_plan_serves_the_same_steps():
    """A plan built fresh at step k (a resumed run, or another world size) gives the batches of
    the one that ran from step 0: nothing depends on history."""
    n = sum(SIZES)
    kw = dict(batch_size=4, max_steps=50, seed=0, stage=0, chunk_sizes={"x": SIZES})
    ran = StepPlan([Source("x", list(range(n)))], **kw)
    first = [ran.step(s)[1] for s in range(50)]
    fresh = StepPlan([Source("x", list(range(n)))], **kw)
    assert [fresh.step(s)[1] for s in range(33, 50)] == first[33:]
    halves = [StepPlan([Source("x", list(range(n)))], **{**kw, "batch_size": 2}, rank=r, world_size=2)
              for r in range(2)]
    assert [halves[0].step(s)[1] + halves[1].step(s)[1] for s in range(21, 50)] == first[21:]


def test_chunk_permutation_only_reads_the_generator():
    chunks = chunk_of(range(sum(SIZES)), SIZES)
    p1 = chunk_permutation(chunks, torch.Generator().manual_seed(5), 3)
    p2 = chunk_permutation(chunks, torch.Generator().manual_seed(5), 3)
    assert torch.equal(p1, p2) and sorted(p1.tolist()) == list(range(len(chunks)))


def test_only_datasets_that_declare_chunks_get_chunk_aware_plans():
    class Folder:
        ids = ["a"]

    class Stored:
        chunk_sizes = [3, 4]

    assert declared_chunks({"f": Folder(), "s": Stored()}) == {"s": [3, 4]}
    n = 40
    plain = StepPlan([Source("x", list(range(n)))], batch_size=4, max_steps=10, seed=2, stage=0)
    other = StepPlan([Source("x", list(range(n)))], batch_size=4, max_steps=10, seed=2, stage=0,
                     chunk_sizes={"y": [20, 20]})
    assert _epoch(plain, 10) == _epoch(other, 10), "a source without declared chunks keeps the plain permutation"
    want = torch.randperm(n, generator=_generator(2, 0, 0, 0))
    assert _epoch(plain, 10) == want.tolist(), "the folder path's permutation is unchanged"


def test_a_source_within_one_window_keeps_the_plain_order():
    """Prepared data in at most ``window`` chunks is read in the folder path's order (already chunk-local)."""
    n = 30
    plain = StepPlan([Source("x", list(range(n)))], batch_size=5, max_steps=12, seed=9, stage=1)
    few = StepPlan([Source("x", list(range(n)))], batch_size=5, max_steps=12, seed=9, stage=1,
                   chunk_sizes={"x": [10, 10, 10]}, chunk_window=4)
    assert _epoch(few, 12) == _epoch(plain, 12)
