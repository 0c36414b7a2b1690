"""`medkit prepare --modality report`: cleaned and tokenised once, stored as ids, trained on as the folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("litdata")

from medkit.api.errors import ConfigError, MedkitError
from medkit.data.prepare import content_hash, prepare
from medkit.data.prepared import PartReader, read_manifest
from medkit.data.prepared_dataset import open_prepared
from medkit.registry import create


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prep-reports")
    demo = Path(create("modality", "report").demo_data(root / "demo"))
    prepare(create("modality", "report"), demo, root / "prepared", part_size=64, tokenizer=_tokenizer())
    return {"demo": demo, "prepared": root / "prepared", "root": root}


def _tokenizer(**kwargs) -> torch.nn.Module:
    return create("tokenizer", "text_1d", embed_dim=8, **kwargs)


def _batches(dataset, train_indices, tokenizer, chunk_sizes=None, steps=6):
    from medkit.api.batch import Source
    from medkit.engine.loader import PlanSampler, StepSamples
    from medkit.engine.plan import StepPlan

    plan = StepPlan([Source("report", list(train_indices))], batch_size=8, max_steps=steps, seed=11, stage=0,
                    chunk_sizes=chunk_sizes)
    sampler = PlanSampler()
    sampler.set_plan(plan)
    samples = StepSamples({"report": dataset}, {"report": tokenizer})
    return [samples[item][0] for item in sampler]


def test_training_batches_from_prepared_reports_are_the_folder_ones(reports):
    """Same split by report, and the same token ids, attention masks and sample ids batch by batch
    (the demo's 4 parts are 4 chunks, one window of the chunk-aware plan: the folder path's order)."""
    from medkit.engine.chunk_plan import declared_chunks
    from medkit.engine.datasets import build_datasets

    mods = {"report": create("modality", "report")}
    folder = build_datasets(mods, {"report": str(reports["demo"])}, val_fraction=0.1, seed=2)
    prepared = build_datasets(mods, {"report": str(reports["prepared"])}, val_fraction=0.1, seed=2)
    assert prepared.split["modalities"]["report"]["val"] == folder.split["modalities"]["report"]["val"]
    tok = _tokenizer()
    prepared.train["report"].check_tokenizer(tok)
    want = _batches(folder.train["report"], folder.train_indices["report"], tok)
    got = _batches(prepared.train["report"], prepared.train_indices["report"], tok,
                   declared_chunks(prepared.train))
    for a, b in zip(want, got, strict=True):
        assert a.ids == b.ids
        assert torch.equal(a.inputs, b.inputs) and a.inputs.dtype == b.inputs.dtype == torch.long
        assert torch.equal(a.attention_mask, b.attention_mask)
    assert int(want[0].attention_mask.sum()) < want[0].attention_mask.numel(), "padding is exercised"


def test_reports_are_stored_as_the_smallest_id_dtype_with_the_tokenizer_in_the_manifest(reports):
    manifest = read_manifest(reports["prepared"])
    tok = manifest["storage"]["tokenizer"]
    assert manifest["kind"] == "text" and manifest["num_samples"] == 200
    assert tok["name"] == "text_1d" and tok["max_length"] == 112 and tok["ids_dtype"] == "uint16"
    assert len(tok["vocab_sha256"]) == 64
    item = PartReader(reports["prepared"], manifest["parts"]).read(0)
    assert np.asarray(item["ids"]).dtype == np.uint16 and set(item) == {"ids"}
    first = create("modality", "report").dataset(reports["demo"]).texts[0]
    assert np.asarray(item["ids"]).tolist() == _tokenizer().encode_ids([first])[0]


def test_prepared_ids_refuse_another_tokenizer_in_one_line(reports):
    ds = open_prepared(create("modality", "report"), reports["prepared"], train=True)
    with pytest.raises(ConfigError) as err:
        ds.check_tokenizer(_tokenizer(max_length=64))
    msg = str(err.value)
    assert "\n" not in msg and "max_length=112" in msg and "64" in msg
    with pytest.raises(ConfigError, match="modality.report.sections="):  # cleaning options are preprocessing
        open_prepared(create("modality", "report", sections="all"), reports["prepared"], train=True)


def test_a_run_with_another_vocabulary_is_refused_before_training(reports, tmp_path):
    from medkit.api.progress import NullReporter
    from medkit.config.compose import Selection, compose
    from medkit.engine.engine import Engine
    from medkit.registry import get_host

    host = get_host()
    cfg = compose(Selection(modalities=["report"], strategy="sequential", preset="tiny",
                            data={"report": str(reports["prepared"])}, max_steps=1,
                            overrides=["tokenizer.text_1d.max_length=48"]), host=host)
    with pytest.raises(ConfigError, match="max_length=112"):
        Engine(cfg, tmp_path / "run", components=host, reporter=NullReporter()).run()
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_preparing_reports_again_reuses_every_part_and_needs_a_tokenizer(reports, tmp_path):
    again = prepare(create("modality", "report"), reports["demo"], reports["prepared"], part_size=64,
                    tokenizer=_tokenizer())
    assert again.written == 0 and again.reused == 4
    assert again.content_sha256 == content_hash(reports["prepared"])
    with pytest.raises(MedkitError, match="needs a tokenizer"):
        prepare(create("modality", "report"), reports["demo"], tmp_path / "x")
