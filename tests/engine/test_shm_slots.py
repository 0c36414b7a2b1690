"""Workers stack into reused shared segments; a segment the main process still uses is never written."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from medkit.api.batch import Batch, Source, stack_inputs
from medkit.engine.loader import RunLoader
from medkit.engine.plan import StepPlan
from medkit.engine.shm_slots import SharedSlots


def _as_worker(monkeypatch: pytest.MonkeyPatch, wid: int = 0) -> None:
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: SimpleNamespace(id=wid))


def _grey(value: float, n: int = 3) -> list[torch.Tensor]:
    return [torch.full((1, 4, 4), value + k) for k in range(n)]


def _in_main(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the main process receives it: the same memory, mapped again from the segment's fd."""
    import os

    fd, size = x.untyped_storage()._share_fd_cpu_()
    mapped = torch.UntypedStorage._new_shared_fd_cpu(os.dup(fd), size)
    return torch.empty(0, dtype=x.dtype).set_(mapped, x.storage_offset(), x.shape, x.stride())


def test_a_slot_is_reused_only_once_nothing_refers_to_its_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_worker(monkeypatch)
    slots = SharedSlots(1, per_worker=2)
    with slots.stacking() as first:
        a = _in_main(stack_inputs(_grey(0.0), channels=3))
    assert first == [0] and a.stride(1) == 0
    slots.received(first, [a])
    with slots.stacking() as second:
        b = _in_main(stack_inputs(_grey(10.0), channels=3))
    slots.received(second, [b])
    assert second == [1], "slot 0 is still held by `a`"
    with slots.stacking() as third:  # both held: a new segment, as torch would make
        c = stack_inputs(_grey(20.0), channels=3)
    slots.received(third, [c])
    assert third == []
    assert torch.equal(a, torch.stack(_grey(0.0)).expand(3, 3, 4, 4)), "a held batch was overwritten"
    view = b[1:]  # a view keeps the segment in use
    del a, b
    slots.release()
    with slots.stacking() as fourth:
        d = stack_inputs(_grey(30.0), channels=3)
    assert fourth == [0]
    assert torch.equal(view, torch.stack(_grey(10.0))[1:].expand(2, 3, 4, 4))
    assert torch.equal(d, torch.stack(_grey(30.0)).expand(3, 3, 4, 4))


def test_an_item_stacked_in_two_slots_holds_both_while_any_of_its_tensors_lives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _as_worker(monkeypatch)
    slots = SharedSlots(1, per_worker=2)
    with slots.stacking() as taken:  # e.g. a tokenizer that stacks its inputs and a mask
        inputs = _in_main(stack_inputs(_grey(0.0), channels=3))
        mask = _in_main(stack_inputs([torch.full((1, 2), float(k)) for k in range(3)]))
    assert taken == [0, 1]
    slots.received(taken, [inputs, mask])
    del inputs
    slots.release()
    with slots.stacking() as next_item:  # the mask still lives: neither slot is free
        stack_inputs(_grey(5.0), channels=3)
    assert next_item == []
    assert mask.flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    del mask
    slots.release()
    with slots.stacking() as after:
        stack_inputs(_grey(5.0), channels=3)
    assert after == [0]


def test_a_failed_item_gives_its_slots_back(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_worker(monkeypatch)
    slots = SharedSlots(1, per_worker=1)
    with pytest.raises(RuntimeError), slots.stacking():
        stack_inputs(_grey(0.0), channels=3)
        raise RuntimeError("a sample failed after stacking")
    with slots.stacking() as taken:
        stack_inputs(_grey(0.0), channels=3)
    assert taken == [0]


def test_no_shared_memory_for_a_segment_falls_back_to_torch_and_keeps_none_idle(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _as_worker(monkeypatch)
    slots = SharedSlots(1, per_worker=2)
    with slots.stacking() as first:
        a = _in_main(stack_inputs(_grey(0.0), channels=3))
    slots.received(first, [a])
    del a
    slots.release()  # slot 0 is idle now, and too small for what comes next

    original = torch.UntypedStorage._new_shared

    def full(nbytes: int, **kwargs: Any) -> Any:  # full for a kept segment; torch's own (after the
        if kwargs:                                 # idle one was given back) still fits
            return original(nbytes, **kwargs)
        raise RuntimeError("unable to write to file </torch_1_2_3>: No space left on device (28)")

    monkeypatch.setattr(torch.UntypedStorage, "_new_shared", full)
    big = [torch.full((1, 8, 8), float(k)) for k in range(3)]
    with caplog.at_level("WARNING"), slots.stacking() as taken:
        out = stack_inputs(big, channels=3)
    assert taken == [] and slots._storages == {}, "the idle segment should have been given back"
    assert torch.equal(out, torch.stack(big).expand(3, 3, 8, 8))
    assert "--shm-size" in caplog.text


def test_grey_crosses_as_one_channel_and_batch_to_makes_it_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = [torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    whole = stack_inputs(samples, channels=3)  # outside a worker: torch.stack of the repeated samples
    assert whole.is_contiguous() and whole.shape == (4, 3, 8, 8)
    _as_worker(monkeypatch)
    slots = SharedSlots(1)
    with slots.stacking():
        sent = stack_inputs(samples, channels=3)
    assert sent.shape == (4, 3, 8, 8) and sent.stride(1) == 0
    assert sent.untyped_storage().nbytes() == 4 * 8 * 8 * 4, "grey should cross at one channel"
    got = Batch(modality="xray", inputs=sent).to("cpu").inputs
    assert got.is_contiguous() and torch.equal(got, whole)
    halves = Batch(modality="xray", inputs=sent).split(2)
    assert torch.equal(torch.cat([h.to("cpu").inputs for h in halves]), whole)
    with slots.stacking():  # grey samples repeated as views (a prepared canvas's) cross as one channel too
        viewed = stack_inputs([x.expand(3, 8, 8) for x in samples], channels=3)
    assert viewed.stride(1) == 0 and torch.equal(Batch(modality="xray", inputs=viewed).to("cpu").inputs, whole)
    colour = [torch.rand(3, 8, 8) for _ in range(2)]  # not grey: stacked whole
    with slots.stacking():
        out = stack_inputs(colour, channels=3)
    assert out.is_contiguous() and torch.equal(out, torch.stack(colour))


class _Grey:
    """A dataset whose sample is a grey image filled with its index and seed."""

    ids = [f"s{i}" for i in range(12)]

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        x = torch.full((1, 16, 16), float(index))
        x[0, 0, 0] = float((seed or 0) % 4096)
        return {"input": x, "id": self.ids[index]}


def _plan() -> StepPlan:
    return StepPlan([Source("m", list(range(12)))], batch_size=4, max_steps=24, seed=3, stage=0)


def _check(plan: StepPlan, s: int, batch: Batch) -> None:
    _, indices, seeds = plan.step(s)
    assert batch.inputs.stride(1) == 0, "grey should cross as one channel"
    x = batch.to("cpu").inputs
    assert x.shape == (4, 3, 16, 16) and x.is_contiguous()
    assert x[:, :, 1, 1].tolist() == [[float(i)] * 3 for i in indices], f"step {s}"
    assert x[:, :, 0, 0].tolist() == [[float(v % 4096)] * 3 for v in seeds], f"step {s}"


def _segment(batch: Batch) -> int:
    """The inode of the shared segment that holds ``batch``'s inputs (in this process)."""
    import os

    fd, _ = batch.inputs.untyped_storage()._share_fd_cpu_()
    return os.fstat(fd).st_ino


@pytest.mark.parametrize("keep", [True, False])
def test_two_workers_batches_are_right_whether_or_not_the_main_process_keeps_them(keep: bool) -> None:
    from medkit.registry import create

    tokenizer = create("tokenizer", "patch_2d", embed_dim=8, patch_size=(16, 16), base_size=(16, 16))
    loader = RunLoader({"m": _Grey()}, {"m": tokenizer}, num_workers=2)
    plan = _plan()
    kept: list[Batch] = []
    segments: set[int] = set()
    try:
        for _ in range(2):  # the persistent workers' slots serve a second stage
            for s, batch in enumerate(loader.stage(plan)):
                segments.add(_segment(batch))
                _check(plan, s, batch)
                if keep:  # every batch stays referenced: no slot is ever free
                    kept.append(batch)
        if keep:  # nothing was overwritten while held: every batch is still what it was
            for k, batch in enumerate(kept):
                _check(plan, k % len(plan), batch)
            assert len(segments) == 2 * len(plan), "a held segment was reused"
        else:  # reused: at most the workers' slots (+ the few made while the main held them all)
            assert len(segments) <= 2 * 4 + 2, len(segments)
    finally:
        loader.close()
