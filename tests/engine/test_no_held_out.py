"""A modality whose split holds nothing out is said loudly when the split is made, not as n/a at the end."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medkit.engine.datasets import build_datasets
from medkit.testing.synthetic import SyntheticModality


def test_an_empty_held_out_side_is_a_warning_when_the_split_is_made(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    one = SyntheticModality("synth_a", num_samples=1)  # one source: nothing can be held out
    many = SyntheticModality("synth_b", num_samples=40)
    roots = {"synth_a": str(one.demo_data(tmp_path / "a")), "synth_b": str(many.demo_data(tmp_path / "b"))}
    caplog.set_level(logging.INFO, logger="medkit.engine.datasets")
    data = build_datasets({"synth_a": one, "synth_b": many}, roots, val_fraction=0.1, seed=0)
    assert data.val_indices["synth_a"] == [] and data.val_indices["synth_b"]
    loud = [r for r in caplog.records if r.levelno == logging.WARNING and "NO HELD-OUT SAMPLE" in r.getMessage()]
    assert len(loud) == 1 and loud[0].getMessage().startswith("synth_a: ")
    assert "trainer.val_fraction" in loud[0].getMessage()
