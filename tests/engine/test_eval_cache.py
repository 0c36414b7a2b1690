"""trainer.eval_cache_mb: the evaluation reuses un-augmented samples across stages, and its numbers do not move."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medkit.api.context import SampleMemo
from medkit.testing.synthetic import run_synthetic


def test_the_memo_loads_each_sample_once_and_keeps_nothing_past_its_budget() -> None:
    loads: list[int] = []

    def load(i: int) -> dict[str, object]:
        loads.append(i)
        return {"input": torch.full((4,), float(i)), "id": f"s{i}"}  # 16 bytes of tensor data + 2 of id

    memo = SampleMemo(max_bytes=40)  # room for two samples
    first = [memo.get("m", i, lambda i=i: load(i)) for i in (0, 1, 2)]
    again = [memo.get("m", i, lambda i=i: load(i)) for i in (0, 1, 2)]
    assert loads == [0, 1, 2, 2], "0 and 1 kept; 2 is past the budget and loaded every time"
    assert all(torch.equal(a["input"], b["input"]) for a, b in zip(first, again))
    assert again[0] is first[0] and memo.used == 36 and (memo.hits, memo.misses) == (2, 4)
    assert memo.get("other", 0, lambda: load(9))["id"] == "s9", "the key includes the modality"


def test_a_run_with_the_cache_evaluates_exactly_as_one_without(tmp_path: Path) -> None:
    records = []
    for mb in (0, 64):
        run = run_synthetic(tmp_path / f"run{mb}", "sequential", demo_dir=tmp_path / "demo", max_steps=3,
                            overrides=(f"trainer.eval_cache_mb={mb}", "trainer.probe_refit_steps=3",
                                       "trainer.num_workers=0"))
        records.append([r["metrics"] for r in json.loads((run / "metrics" / "eval.json").read_text())])
    assert records[0] == records[1]
    assert {"refit_loss", "linear_acc", "knn_acc"} <= set(records[0][-1])
