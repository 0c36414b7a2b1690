"""The engine reads the typed sections built once from the config, and never changes the config it is given."""

from __future__ import annotations

import copy
import json

from medkit.api.progress import NullReporter
from medkit.config.compose import Selection, compose
from medkit.engine.engine import Engine
from medkit.testing.synthetic import use_synthetic_host

BASE = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
        "trainer.eval_batches=1", "trainer.checkpoint_every=2", "trainer.log_every=3", "trainer.keep_checkpoints=3"]


def _cfg(host, *overrides: str) -> dict:
    return compose(Selection(modalities=["synth_a"], strategy="sequential", preset="tiny", max_steps=4,
                             overrides=[*BASE, *overrides]), host=host)


def test_a_run_reads_the_typed_values_and_leaves_its_config_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path / "demo"))
    host = use_synthetic_host()
    cfg = _cfg(host)
    before = copy.deepcopy(cfg)
    engine = Engine(cfg, tmp_path / "r", components=host, reporter=NullReporter())
    assert engine.settings.trainer.log_every == 3 and engine.store.keep == 3
    engine.run()
    assert cfg == before, "the engine changed the config it was given"
    generations = sorted((tmp_path / "r" / "generations").glob("g-*"))
    assert len(generations) == 3, "trainer.keep_checkpoints=3 keeps three generations"


def test_resume_under_another_world_size_derives_new_objects(tmp_path, monkeypatch):
    """The per-process batch that keeps the global batch is a new TrainerConfig and a new config
    dict (what the manifest hashes, as before); the config the caller passed is unchanged."""
    host = use_synthetic_host()
    cfg = _cfg(host)
    before = copy.deepcopy(cfg)
    gen = tmp_path / "g"
    gen.mkdir()
    (gen / "manifest.json").write_text(json.dumps({"world_size": 2}))
    engine = Engine(cfg, tmp_path / "r", components=host, reporter=NullReporter(), resume=True)
    typed_before = engine.settings.trainer
    engine.recovered = gen
    engine._keep_global_batch()  # this process alone now: 2 × 4 samples per step
    assert engine.settings.trainer.batch_size == 8 and typed_before.batch_size == 4
    assert engine.cfg["trainer"]["batch_size"] == 8 and engine.cfg is not cfg
    assert cfg == before
