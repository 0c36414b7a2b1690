"""The buffer's feature pass and the evaluation load through the run's DataLoader workers and give
exactly what loading in the main process gives."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.testing import run_synthetic

RUN_OVERRIDES = ("strategy.spill_threshold=0", "strategy.kmeans_seed=3", "strategy.buffer_ratio=0.25")


@pytest.mark.slow
def test_rehearsal_with_two_workers_equals_no_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.engine.chunks import ChunkSamples
    from medkit.storage.files import load_tensors

    where = tmp_path / "pids"
    where.mkdir()
    original = ChunkSamples.__getitem__

    def recording(self: ChunkSamples, item: Any) -> Any:
        with open(where / str(os.getpid()), "a", encoding="utf-8") as f:
            f.write(f"{item.modality}:{int(item.train)}\n")
        return original(self, item)

    monkeypatch.setattr(ChunkSamples, "__getitem__", recording)  # before the workers fork
    demo = tmp_path / "demo"
    two = run_synthetic(tmp_path / "w2", "rehearsal", demo_dir=demo,
                        overrides=(*RUN_OVERRIDES, "trainer.num_workers=2"))
    zero = run_synthetic(tmp_path / "w0", "rehearsal", demo_dir=demo,
                         overrides=(*RUN_OVERRIDES, "trainer.num_workers=0"))
    loaded = {int(p.name): set(p.read_text().split()) for p in where.iterdir()}
    assert loaded and os.getpid() not in loaded, "evaluation/feature batches were loaded in the main process"
    assert {"synth_a:0", "synth_b:0"} <= set().union(*loaded.values())
    for name in ("eval.json",):
        assert json.loads((two / "metrics" / name).read_text()) == json.loads((zero / "metrics" / name).read_text())
    s2 = json.loads((two / "strategy" / "state.json").read_text())["buffers"]
    s0 = json.loads((zero / "strategy" / "state.json").read_text())["buffers"]
    assert [b["ids"] for b in s2] == [b["ids"] for b in s0]  # the k-means buffer saw the same features
    a, b = load_tensors(two / "model.safetensors"), load_tensors(zero / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
