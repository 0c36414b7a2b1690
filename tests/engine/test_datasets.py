"""The run's split: by source, written to metrics/split.json, and kept by runs that continue it."""

from __future__ import annotations

import json
from pathlib import Path

from medkit.engine.datasets import build_datasets
from medkit.testing.synthetic import SyntheticModality, run_synthetic


def test_a_continued_run_keeps_the_held_out_sources_of_the_model_it_continues(tmp_path: Path) -> None:
    modality = SyntheticModality("synth_a", num_samples=40)
    root = modality.demo_data(tmp_path / "a")
    first = build_datasets({"synth_a": modality}, {"synth_a": str(root)}, val_fraction=0.2, seed=0)
    held = set(first.split["modalities"]["synth_a"]["val"])
    # a later run with another seed and fraction would split differently on its own ...
    alone = build_datasets({"synth_a": modality}, {"synth_a": str(root)}, val_fraction=0.5, seed=7)
    assert set(alone.split["modalities"]["synth_a"]["val"]) != held
    # ... but continuing the first model, whatever it held out stays held out and what it trained on
    # stays in training: held-out numbers never measure samples an earlier stage trained on
    kept = build_datasets({"synth_a": modality}, {"synth_a": str(root)}, val_fraction=0.5, seed=7,
                          previous=first.split)
    assert kept.split["modalities"]["synth_a"] == first.split["modalities"]["synth_a"] | {"data": str(root)}


def test_the_run_writes_its_split_by_source(tmp_path: Path) -> None:
    run = run_synthetic(tmp_path / "r", "sequential", ("synth_a",), max_steps=2, demo_dir=tmp_path / "demo")
    split = json.loads((run / "metrics" / "split.json").read_text())
    side = split["modalities"]["synth_a"]
    assert side["val"] and side["train"] and not set(side["val"]) & set(side["train"])
    assert split["seed"] == 0 and split["val_fraction"] == 0.1
