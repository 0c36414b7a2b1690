"""A run's tokenizer assets go through the commit protocol: they are part of each committed generation
(``tokenizers/`` is read through ``current``), never written beside it, and a resume reads them there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medkit.api.errors import CheckpointError
from medkit.api.progress import NullReporter
from medkit.config.compose import Selection, compose
from medkit.engine import checkpoint as cp
from medkit.engine.engine import Engine, load_config
from medkit.engine.generations import GenerationStore
from medkit.registry import get_host

SMALL = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
         "trainer.eval_batches=1", "trainer.probe_knn_k=0", "trainer.probe_linear_steps=0"]
TOKENIZER = Path("tokenizers") / "text_1d" / "tokenizer.json"


class Stop(Exception):
    """Stands for a kill right after a checkpoint was committed."""


def _vocabulary(tmp_path: Path) -> Path:
    """A word-piece vocabulary of its own (so the run's copy is the only one after it is deleted)."""
    from medkit_plugin_tokenizers.text import train_tokenizer  # the plugin's trainer (a test-only import)

    words = ["lung", "clear", "effusion", "heart", "normal", "size", "opacity", "left", "right", "base"]
    texts = [f"the {a} {b} is {c}" for a in words for b in words for c in words[:3]]
    return train_tokenizer(texts, 120, tmp_path / "vocab", min_frequency=1)


def _cfg(vocab: Path, *overrides: str) -> dict:
    host = get_host()
    return compose(Selection(modalities=["report"], strategy="sequential", preset="tiny", max_steps=3,
                             overrides=[*SMALL, f"tokenizer.text_1d.vocab_file={vocab}", *overrides]), host=host)


def test_tokenizer_assets_are_committed_with_each_generation_and_resume_reads_them(tmp_path, monkeypatch):
    vocab = _vocabulary(tmp_path)
    run = tmp_path / "r"
    commits: list[Path] = []
    write = cp.write_generation

    def write_then_stop(*args, **kwargs):
        commits.append(write(*args, **kwargs))
        if len(commits) == 2:  # generation 2: the checkpoint after step 1
            raise Stop
        return commits[-1]

    monkeypatch.setattr(cp, "write_generation", write_then_stop)
    with pytest.raises(Stop):
        Engine(_cfg(vocab, "trainer.checkpoint_every=1"), run, components=get_host(), reporter=NullReporter()).run()
    expected = vocab.read_text(encoding="utf-8")
    current = (run / "current").resolve()
    assert (run / "tokenizers").is_symlink() and (run / "tokenizers").resolve() == current / "tokenizers", \
        "tokenizers/ is read through the current generation"
    for gen in commits:  # every committed generation holds the assets, the same as the vocabulary trained
        assert json.loads((gen / TOKENIZER).read_text())["model"]["vocab"] == json.loads(expected)["model"]["vocab"]
    assert os.path.samefile(commits[0] / TOKENIZER, commits[1] / TOKENIZER), "carried, not written again"

    vocab.unlink()  # the resume must read the run's own copy, inside its generation
    monkeypatch.setattr(cp, "write_generation", write)
    resumed = Engine(load_config(run), run, components=get_host(), reporter=NullReporter(), resume=True)
    resumed.run()
    final = (run / "current").resolve()
    assert final != current and json.loads((run / "manifest.json").read_text())["finished"] is True
    assert (run / "tokenizers").resolve() == final / "tokenizers"
    assert json.loads((final / TOKENIZER).read_text())["model"]["vocab"] == json.loads(expected)["model"]["vocab"]
    # the deleted file was not needed: the resumed tokenizer is the trained vocabulary, from the generation
    tok = resumed.model.encoder.tokenizers["text_1d"]
    assert tok.vocab_size == len(json.loads(expected)["model"]["vocab"])


def test_a_run_that_fails_before_its_first_commit_leaves_no_tokenizer_files(tmp_path, monkeypatch):
    vocab = _vocabulary(tmp_path)
    run = tmp_path / "r"

    def refuse(self, gen):
        raise CheckpointError(f"cannot write {gen.path}: disk full (test)")

    monkeypatch.setattr(GenerationStore, "commit", refuse)
    with pytest.raises(CheckpointError, match="disk full"):
        Engine(_cfg(vocab), run, components=get_host(), reporter=NullReporter()).run()
    outside = [p for p in run.rglob("tokenizer.json") if ".staging-" not in str(p)]
    assert not outside and not (run / "tokenizers").exists(), \
        f"tokenizer files written outside the generation being committed: {outside}"
    GenerationStore(run).recover()  # what --resume does first: the staging folder goes
    assert not list(run.rglob("tokenizer.json"))


def _commit(store: GenerationStore, *, tokenizers: bool) -> Path:
    gen = store.begin()
    gen.write_bytes("model.safetensors", b"weights")
    if tokenizers:
        gen.write_bytes(str(TOKENIZER), b'{"model": {"vocab": {}}}')
    return store.commit(gen)


def test_the_tokenizers_link_follows_the_generation_and_an_older_run_keeps_its_folder(tmp_path):
    plain = GenerationStore(tmp_path / "images-only")
    _commit(plain, tokenizers=False)
    assert not os.path.lexists(tmp_path / "images-only" / "tokenizers"), "no dangling link without assets"

    store = GenerationStore(tmp_path / "r")
    first = _commit(store, tokenizers=True)
    assert (tmp_path / "r" / "tokenizers").resolve() == first / "tokenizers"
    second = _commit(store, tokenizers=True)
    assert (tmp_path / "r" / TOKENIZER).resolve() == second / TOKENIZER

    old = tmp_path / "old"  # written before generations held the assets: a folder of its own
    (old / "tokenizers" / "text_1d").mkdir(parents=True)
    (old / TOKENIZER).write_text("the old copy")
    _commit(GenerationStore(old), tokenizers=True)
    assert not (old / "tokenizers").is_symlink() and (old / TOKENIZER).read_text() == "the old copy"
