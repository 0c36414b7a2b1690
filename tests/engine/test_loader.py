"""The run's one DataLoader: workers spawned once for every stage, the same batches as without workers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api.batch import Source
from medkit.engine.loader import RunLoader, StepSamples
from medkit.engine.plan import StepPlan
from medkit.testing.synthetic import run_synthetic


def _steps(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics" / "steps.jsonl").read_text().splitlines()]


def _record_builders(monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
    """Every process that builds a batch appends the batch's modality to ``where/<pid>``
    (the patch is in place before the workers fork, so they run it too)."""
    where.mkdir()
    original = StepSamples.__getitem__

    def recording(self: StepSamples, item: Any) -> Any:
        with open(where / str(os.getpid()), "a", encoding="utf-8") as f:
            f.write(item.modality + "\n")
        return original(self, item)

    monkeypatch.setattr(StepSamples, "__getitem__", recording)


def _builders(where: Path) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for f in where.iterdir():
        for modality in f.read_text().split():
            out.setdefault(modality, set()).add(int(f.name))
    return out


@pytest.mark.slow
def test_two_workers_serve_every_stage_and_give_the_losses_of_no_workers(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    demo = tmp_path / "demo"
    _record_builders(monkeypatch, tmp_path / "pids")
    run2 = run_synthetic(tmp_path / "w2", "sequential", max_steps=4, demo_dir=demo,
                         overrides=("trainer.num_workers=2",))
    by_stage = _builders(tmp_path / "pids")
    assert set(by_stage) == {"synth_a", "synth_b"}
    assert by_stage["synth_a"] == by_stage["synth_b"], "stage 2 was served by other worker processes"
    assert len(by_stage["synth_a"]) == 2 and os.getpid() not in by_stage["synth_a"]
    run0 = run_synthetic(tmp_path / "w0", "sequential", max_steps=4, demo_dir=demo)
    s2, s0 = _steps(run2), _steps(run0)
    assert [(s["stage"], s["step"], s["modality"]) for s in s2] == [(s["stage"], s["step"], s["modality"]) for s in s0]
    assert [s["loss"] for s in s2] == [s["loss"] for s in s0]


@pytest.mark.slow
def test_resume_mid_stage_with_workers_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.api.progress import NullReporter
    from medkit.engine.engine import Engine, load_config
    from medkit.registry import get_host
    from medkit.storage.files import load_tensors
    from medkit.strategies.base import BaseStrategy

    demo, over = tmp_path / "demo", ("trainer.num_workers=2", "trainer.checkpoint_every=2")
    whole = run_synthetic(tmp_path / "whole", "sequential", max_steps=4, demo_dir=demo, overrides=over)
    original = BaseStrategy.loss

    def crash(self: BaseStrategy, ctx: Any, batch: Any) -> Any:
        if ctx.stage_index == 1 and ctx.step == 3:
            raise KeyboardInterrupt("simulated crash after the step-2 checkpoint of stage 2")
        return original(self, ctx, batch)

    monkeypatch.setattr(BaseStrategy, "loss", crash)
    with pytest.raises(KeyboardInterrupt):
        run_synthetic(tmp_path / "cut", "sequential", max_steps=4, demo_dir=demo, overrides=over)
    monkeypatch.setattr(BaseStrategy, "loss", original)
    Engine(load_config(tmp_path / "cut"), tmp_path / "cut", components=get_host(), reporter=NullReporter(),
           resume=True).run()
    a, b = load_tensors(whole / "model.safetensors"), load_tensors(tmp_path / "cut" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert [s["loss"] for s in _steps(whole)] == [s["loss"] for s in _steps(tmp_path / "cut")]


class _Table:
    """A dataset whose sample is its index and seed (so a batch shows what built it)."""

    ids = [f"s{i}" for i in range(10)]

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        return {"input": torch.tensor([index, seed or 0], dtype=torch.float64), "id": self.ids[index]}


class _Stack:
    def collate(self, samples: Any, modality: str) -> dict[str, torch.Tensor]:
        return {"inputs": torch.stack([s["input"] for s in samples])}


def test_the_sampler_carries_each_stage_plan_and_start_step() -> None:
    loader = RunLoader({"m": _Table(), "n": _Table()}, {"m": _Stack(), "n": _Stack()})
    first = StepPlan([Source("m", list(range(10)))], batch_size=3, max_steps=5, seed=1, stage=0)
    second = StepPlan([Source("n", [1, 3, 5, 7], role="current"), Source("m", [0, 2], role="buffer")],
                      batch_size=2, max_steps=6, seed=1, stage=1)
    for plan, start in ((first, 0), (second, 2), (first, 4)):
        got = list(loader.stage(plan, start_step=start))
        assert len(got) == len(plan) - start
        for s, batch in enumerate(got, start):
            src, indices, seeds = plan.step(s)
            assert batch.modality == src.modality and batch.role == src.role and batch.seeds == seeds
            assert batch.inputs[:, 0].long().tolist() == indices
            assert batch.inputs[:, 1].long().tolist() == seeds
    assert list(loader.stage(first, start_step=5)) == []
    loader.close()


def test_the_plan_is_the_same_whatever_order_its_steps_are_asked_in() -> None:
    def make() -> StepPlan:
        return StepPlan([Source("m", list(range(7))), Source("n", list(range(5)), role="buffer")],
                        batch_size=3, max_steps=12, seed=4, stage=2, min_current_fraction=0.5)

    forward, backward = make(), make()
    ahead = [forward.step(s) for s in range(12)]
    behind = [backward.step(s) for s in reversed(range(12))][::-1]
    assert [(a[0].modality, a[1], a[2]) for a in ahead] == [(b[0].modality, b[1], b[2]) for b in behind]
