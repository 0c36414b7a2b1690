"""The rehearsal strategy on live contexts and on the real engine (two synthetic stages)."""

from __future__ import annotations


import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api import CheckpointError, ConfigError, DataError
from medkit.testing import StepPlan, StrategyContract, get_host, run_synthetic
from medkit_plugin_medcoss.buffer import BufferEntry
from medkit_plugin_medcoss.strategy import make_rehearsal


class TestRehearsalContract(StrategyContract):
    name = "rehearsal"


def entry(modality: str, ids: list[str], stage: int = 0) -> BufferEntry:
    return BufferEntry(modality=modality, stage=stage, ids=ids, num_samples=100, num_clusters=1,
                       per_cluster=len(ids), inertia=1.0, data="/old/data")


def test_sources_interleave_buffers_in_proportion_to_their_size(make_ctx: Any) -> None:
    ids = {"a": [f"a{i}" for i in range(50)], "b": [f"b{i}" for i in range(40)], "c": [f"c{i}" for i in range(80)]}
    ctx = make_ctx(ids=ids, stage=["c"])
    strategy = make_rehearsal()
    strategy.buffers = {"a": entry("a", ["a7", "a3", "a9", "a1"]), "b": entry("b", ["b0", "b39"], stage=1)}
    strategy.before_stage(ctx)
    sources = strategy.sources(ctx)
    assert [(s.modality, s.role, s.share) for s in sources] == [("c", "current", 80.0), ("a", "buffer", 4.0),
                                                                ("b", "buffer", 2.0)]
    assert sources[1].indices == [7, 3, 9, 1] and sources[2].indices == [0, 39]  # ids → dataset indices
    plan = StepPlan(sources, batch_size=2, max_steps=8600, seed=0, stage=2)
    share = [plan.choice.count(i) / len(plan) for i in range(3)]
    assert share == pytest.approx([80 / 86, 4 / 86, 2 / 86], abs=0.01)
    assert strategy.teacher is not None and not strategy.teacher.training


def test_missing_buffer_ids_name_the_ids_and_the_data(make_ctx: Any) -> None:
    ctx = make_ctx(ids={"a": ["a0", "a1"], "c": ["c0"]}, stage=["c"], data={"a": "/new/data/a"})
    strategy = make_rehearsal()
    strategy.buffers = {"a": entry("a", ["a1", "gone1", "gone2"])}
    with pytest.raises(DataError, match=r"2 of the 3 .*'a'.*/old/data.*/new/data/a.*'gone1', 'gone2'"):
        strategy.before_stage(ctx)


def test_a_buffer_without_its_data_is_a_config_error(make_ctx: Any) -> None:
    ctx = make_ctx(ids={"c": ["c0"]}, stage=["c"])
    strategy = make_rehearsal()
    strategy.buffers = {"a": entry("a", ["a1"])}
    with pytest.raises(ConfigError, match="modality 'a'"):
        strategy.before_stage(ctx)


def test_mid_stage_resume_restores_the_saved_teacher(make_ctx: Any) -> None:
    ids = {"a": ["a0", "a1"], "c": ["c0", "c1"]}
    first = make_rehearsal()
    first.buffers = {"a": entry("a", ["a1"])}
    first.before_stage(make_ctx(ids=ids, stage=["c"], seed=1))
    tensors, meta = first.state_dict()
    assert meta["teacher"] and any(k.startswith("teacher.blocks.") for k in tensors)
    saved = {k[len("teacher."):]: v for k, v in tensors.items() if k.startswith("teacher.")}

    resumed = make_rehearsal()
    resumed.load_state_dict(tensors, meta)
    other = make_ctx(ids=ids, stage=["c"], seed=2, resumed=True)  # the student has moved on
    resumed.before_stage(other)
    got = resumed.teacher.state_dict()
    assert all(torch.equal(got[k], v) for k, v in saved.items())
    assert not torch.equal(got["blocks.0.attn.qkv.weight"], other.encoder.state_dict()["blocks.0.attn.qkv.weight"])

    fresh = make_rehearsal()
    fresh.load_state_dict(tensors, meta)
    again = make_ctx(ids=ids, stage=["c"], seed=2)  # not resumed: snapshot the encoder as it is
    fresh.before_stage(again)
    assert torch.equal(fresh.teacher.state_dict()["blocks.0.attn.qkv.weight"],
                       again.encoder.state_dict()["blocks.0.attn.qkv.weight"])

    empty = make_rehearsal()
    empty.load_state_dict({}, {**meta, "teacher": False})
    with pytest.raises(CheckpointError, match="no distillation teacher"):
        empty.before_stage(make_ctx(ids=ids, stage=["c"], resumed=True))


def test_state_of_another_strategy_is_refused() -> None:
    with pytest.raises(CheckpointError, match="'er'"):
        make_rehearsal().load_state_dict({}, {"format": 1, "strategy": "er", "buffers": []})


@pytest.mark.parametrize("kw", [{"mixup_dist": "gauss"}, {"buffer_ratio": 0.0}, {"distill_mask_ratio": 1.0},
                                {"kmeans_method": "faiss"}, {"mixup_dist": "beta", "mixup_alpha": 0.0}])
def test_bad_options_are_config_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="strategy rehearsal"):
        make_rehearsal(**kw)


# buffer_ratio 0.25: ~5 of ~20 samples (the reference rule keeps 1 at 0.05, which gets no step in 6)
RUN_OVERRIDES = ("strategy.spill_threshold=0", "strategy.kmeans_seed=3", "trainer.checkpoint_every=3",
                 "strategy.buffer_ratio=0.25")


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rehearsal")
    return run_synthetic(root / "run", "rehearsal", demo_dir=root / "demo", overrides=RUN_OVERRIDES)


@pytest.mark.slow
def test_two_stage_buffers_come_from_each_modalitys_training_ids(two_stage_run: Path) -> None:
    meta = json.loads((two_stage_run / "strategy" / "state.json").read_text())
    assert [(b["modality"], b["stage"]) for b in meta["buffers"]] == [("synth_a", 0), ("synth_b", 1)]
    split = json.loads((two_stage_run / "metrics" / "split.json").read_text())["modalities"]
    for b in meta["buffers"]:
        train_ids = set(split[b["modality"]]["train"])  # synthetic samples are their own sources
        assert b["num_samples"] == len(train_ids)
        k = max(1, int(len(train_ids) * 0.25 // 1))  # the reference rule: K = max(1, int(0.01 N)) = 1
        assert (b["num_clusters"], b["per_cluster"]) == (1, k)
        assert len(b["ids"]) == k == len(set(b["ids"])) and set(b["ids"]) <= train_ids
    assert not meta["teacher"]  # dropped at the end of the stage
    assert not list(two_stage_run.glob(".medkit-features-*"))  # the fp16 spill was cleaned up


def test_two_stage_run_distils_only_on_buffer_steps(two_stage_run: Path) -> None:
    steps = [json.loads(line) for line in (two_stage_run / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert all(s["role"] == "current" and "distill" not in s for s in steps if s["stage"] == 1)
    rehearsed = [s for s in steps if s["role"] == "buffer"]
    assert rehearsed and all(s["stage"] == 2 and s["modality"] == "synth_a" for s in rehearsed)
    assert all("distill" in s and "mae" not in s for s in rehearsed)
    assert all("mae" in s and "distill" not in s for s in steps if s["role"] == "current")


@pytest.mark.slow
def test_mid_stage_resume_reproduces_the_uninterrupted_run(two_stage_run: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.testing import Engine, NullReporter, load_config, load_tensors
    from medkit_plugin_medcoss.strategy import Rehearsal

    whole, demo = two_stage_run, two_stage_run.parent / "demo"
    original = Rehearsal.loss

    def crash(self: Rehearsal, ctx: Any, batch: Any) -> Any:
        if ctx.stage_index == 1 and ctx.step == 4:
            raise KeyboardInterrupt("simulated crash after the step-3 checkpoint of stage 2")
        return original(self, ctx, batch)

    monkeypatch.setattr(Rehearsal, "loss", crash)
    with pytest.raises(KeyboardInterrupt):
        run_synthetic(tmp_path / "cut", "rehearsal", demo_dir=demo, overrides=RUN_OVERRIDES)
    saved = load_tensors(tmp_path / "cut" / "checkpoint" / "strategy.safetensors")
    assert any(k.startswith("teacher.") for k in saved)  # the mid-stage checkpoint holds the teacher
    monkeypatch.setattr(Rehearsal, "loss", original)
    Engine(load_config(tmp_path / "cut"), tmp_path / "cut", components=get_host(), reporter=NullReporter(),
           resume=True).run()
    a = load_tensors(whole / "model.safetensors")
    b = load_tensors(tmp_path / "cut" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "strategy" / "state.json").read_text() == (tmp_path / "cut" / "strategy" / "state.json").read_text()


# -- ablations: MedCoSS's parts one at a time -------------------------------------------------------
def test_random_selection_draws_the_k_means_size_without_a_feature_pass(make_ctx: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import medkit_plugin_medcoss.strategy as module

    ids = {"a": [f"a{i}" for i in range(200)], "c": [f"c{i}" for i in range(10)]}
    monkeypatch.setattr(module, "build_buffer", lambda *a, **k: pytest.fail("random selection ran k-means"))
    picks = []
    for _ in range(2):
        ctx = make_ctx(ids=ids, stage=["a"])
        strategy = make_rehearsal(selection="random", buffer_ratio=0.05, num_center=0.01)
        strategy.after_stage(ctx)
        entry = strategy.buffers["a"]
        picks.append(entry.ids)
        assert entry.selection == "random" and "a" not in strategy.centroids
        assert len(entry.ids) == 10 == len(set(entry.ids)) and set(entry.ids) <= set(ids["a"])  # K=2 × k=5
        assert BufferEntry.from_json(entry.to_json()) == entry
    assert picks[0] == picks[1]  # a pure function of the seed, the stage and the modality
    other = make_rehearsal(selection="random", kmeans_seed=1)
    other.after_stage(make_ctx(ids=ids, stage=["a"]))
    assert other.buffers["a"].ids != picks[0]


def test_pretext_buffer_loss_rehearses_without_a_teacher(make_ctx: Any) -> None:
    ids = {"a": [f"a{i}" for i in range(8)], "c": [f"c{i}" for i in range(8)]}
    ctx = make_ctx(ids=ids, stage=["c"])
    strategy = make_rehearsal(buffer_loss="pretext")
    strategy.buffers = {"a": entry("a", ["a1", "a2"])}
    strategy.before_stage(ctx)
    assert strategy.teacher is None and strategy.active == {"a": [1, 2]}
    calls = []
    object.__setattr__(ctx, "pretext_loss", lambda batch, **kw: calls.append(batch.role) or "pretext")
    from medkit.api import Batch
    batch = Batch(modality="a", inputs=torch.zeros(2, 3, 32, 32), role="buffer")
    assert strategy.loss(ctx, batch) == "pretext" and calls == ["buffer"]


@pytest.mark.parametrize("kw", [{"selection": "herding"}, {"buffer_loss": "mse"}])
def test_bad_ablation_options_are_config_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="strategy rehearsal: (selection|buffer_loss)"):
        make_rehearsal(**kw)


@pytest.mark.slow
def test_ablated_run_rehearses_a_random_buffer_with_its_pretext_loss(tmp_path: Path) -> None:
    run = run_synthetic(tmp_path / "run", "rehearsal", demo_dir=tmp_path / "demo",
                        overrides=RUN_OVERRIDES + ("strategy.selection=random", "strategy.buffer_loss=pretext"))
    meta = json.loads((run / "strategy" / "state.json").read_text())
    assert {b["selection"] for b in meta["buffers"]} == {"random"}
    steps = [json.loads(line) for line in (run / "metrics" / "steps.jsonl").read_text().splitlines()]
    rehearsed = [s for s in steps if s["role"] == "buffer"]
    assert rehearsed and all("mae" in s and "distill" not in s for s in rehearsed)


def test_kmeans_init_sample_reaches_the_k_means(make_ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import medkit_plugin_medcoss.buffer as buffer

    seen: list[int | None] = []
    real = buffer.kmeans.fit

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("init_sample"))
        return real(*args, **kwargs)

    monkeypatch.setattr(buffer.kmeans, "fit", spy)
    features = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    buffer.select_buffer(features, buffer_ratio=0.2, num_center=0.1, init_sample=7)
    assert seen == [7]
    with pytest.raises(ConfigError, match="kmeans_init_sample"):
        make_rehearsal(kmeans_init_sample=0)
    assert make_rehearsal(kmeans_init_sample=10**9).kmeans["init_sample"] == 10**9
