"""Checkpoint generations: the newest unreadable one falls back to the one before, which resumes to
the same result; old generations beyond trainer.keep_checkpoints are removed."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medkit.api.progress import NullReporter
from medkit.engine.engine import Engine, load_config
from medkit.registry import get_host
from medkit.storage.files import load_tensors
from medkit.testing.synthetic import run_synthetic


def test_an_unreadable_newest_generation_falls_back_and_resumes_to_the_same_weights(tmp_path: Path, caplog) -> None:
    run = run_synthetic(tmp_path / "r", "sequential", max_steps=4, overrides=("trainer.checkpoint_every=2",),
                        demo_dir=tmp_path / "demo")
    want = load_tensors(run / "model.safetensors")
    matrix = (run / "metrics" / "matrix.csv").read_text()
    gens = sorted(p.name for p in (run / "generations").iterdir() if p.name.startswith("g-"))
    assert len(gens) == 2, "keep_checkpoints=2: older generations are removed"
    newest = run / "generations" / gens[-1]
    (newest / "checkpoint" / "trainer.json").write_text("{torn")  # a disk that lost the newest state
    with caplog.at_level("WARNING"):
        Engine(load_config(run), run, components=get_host(), reporter=NullReporter(), resume=True).run()
    assert "falling back to generation" in caplog.text or "cannot be resumed from" in caplog.text
    assert (run / "generations" / f".corrupt-{gens[-1]}").is_dir(), "kept aside, not deleted"
    got = load_tensors(run / "model.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want), "the older generation resumes to the same weights"
    assert (run / "metrics" / "matrix.csv").read_text() == matrix
    assert json.loads((run / "manifest.json").read_text())["finished"] is True
