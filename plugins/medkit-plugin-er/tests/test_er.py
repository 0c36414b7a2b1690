"""Experience replay: the seeded reservoir, buffer sizes, interleaving and a real two-stage run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from medkit.api import CheckpointError, ConfigError, DataError
from medkit.testing import StepPlan, StrategyContract, run_synthetic
from medkit_plugin_er.strategy import ReplayBuffer, buffer_size, make_er, reservoir


class TestERContract(StrategyContract):
    name = "er"


class Ids:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids


def fake_ctx(tmp_path: Path, ids: dict[str, list[str]], stage: list[str], stage_index: int = 1) -> Any:
    return SimpleNamespace(run_dir=tmp_path, stage=stage, stage_index=stage_index,
                           train_sets={m: Ids(v) for m, v in ids.items()},
                           train_indices={m: list(range(len(v))) for m, v in ids.items()})


def test_buffer_size_matches_rehearsals_k_times_clusters() -> None:
    assert buffer_size(377_000, 0.05, 0.01) == 3770 * 5
    assert buffer_size(21, 0.05, 0.01) == 1  # K = 1 cluster × k = int(1.05 // 1), the reference rule
    assert buffer_size(199, 0.05, 0.01) == 9  # k = int(9.95 // 1), not 5
    assert buffer_size(3, 0.05, 0.01) == 1  # the at-least-one floor
    assert buffer_size(3, 1.0, 1.0) == 3  # never more than N
    assert buffer_size(300, 0.03, 0.01) == 9  # 0.03 / 0.01 is 2.9999999999999996 in floats


def test_reservoir_is_seeded_and_uniform() -> None:
    a = reservoir(100, 7, torch.Generator().manual_seed(3))
    assert a == reservoir(100, 7, torch.Generator().manual_seed(3))
    assert a != reservoir(100, 7, torch.Generator().manual_seed(4))
    assert len(a) == len(set(a)) == 7 and all(0 <= i < 100 for i in a)
    assert reservoir(4, 10, torch.Generator().manual_seed(0)) == [0, 1, 2, 3]
    counts = torch.zeros(10)
    for s in range(3000):
        counts[reservoir(10, 3, torch.Generator().manual_seed(s))] += 1
    assert torch.allclose(counts / 3000, torch.full((10,), 0.3), atol=0.035)  # P(keep) = size / n


def test_reservoir_known_answer() -> None:
    # item i ≥ size replaces slot floor(u·(i+1)) when that slot is < size
    g = torch.Generator().manual_seed(11)
    u = torch.rand(3, generator=torch.Generator().manual_seed(11), dtype=torch.float64).tolist()
    kept = [0, 1]
    for item, uu in zip([2, 3, 4], u):
        slot = int(uu * (item + 1))
        if slot < 2:
            kept[slot] = item
    assert reservoir(5, 2, g) == kept


def test_after_stage_draws_training_ids_and_sources_weight_by_size(tmp_path: Path) -> None:
    ids = {"a": [f"a{i}" for i in range(200)], "b": [f"b{i}" for i in range(60)]}
    strategy = make_er(seed=1)
    ctx = fake_ctx(tmp_path, ids, ["a"], stage_index=0)
    ctx.train_indices["a"] = list(range(0, 200, 2))  # only even rows are training samples
    strategy.after_stage(ctx)
    buf = strategy.buffers["a"]
    assert buf.num_samples == 100 and len(buf.ids) == buffer_size(100, 0.05, 0.01) == 5
    assert all(int(s[1:]) % 2 == 0 for s in buf.ids) and len(set(buf.ids)) == 5
    again = make_er(seed=1)
    again.after_stage(ctx)
    assert again.buffers["a"].ids == buf.ids
    other = make_er(seed=2)
    other.after_stage(ctx)
    assert other.buffers["a"].ids != buf.ids

    nxt = fake_ctx(tmp_path, ids, ["b"])
    strategy.before_stage(nxt)
    sources = strategy.sources(nxt)
    assert [(s.modality, s.role, s.share) for s in sources] == [("b", "current", 60.0), ("a", "buffer", 5.0)]
    assert [ids["a"][i] for i in sources[1].indices] == buf.ids
    plan = StepPlan(sources, batch_size=2, max_steps=6500, seed=0, stage=1)
    assert plan.choice.count(1) / len(plan) == pytest.approx(5 / 65, abs=0.01)


def test_missing_ids_and_missing_modalities_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"data": {"a": "/new/a"}}))
    strategy = make_er()
    strategy.buffers = {"a": ReplayBuffer("a", 0, ["a1", "lost"], 10, "/old/a")}
    with pytest.raises(DataError, match=r"1 of the 2 .*/old/a.*/new/a.*'lost'"):
        strategy.before_stage(fake_ctx(tmp_path, {"a": ["a1"], "b": ["b0"]}, ["b"]))
    with pytest.raises(ConfigError, match="modality 'a'"):
        strategy.before_stage(fake_ctx(tmp_path, {"b": ["b0"]}, ["b"]))
    with pytest.raises(CheckpointError, match="'rehearsal'"):
        make_er().load_state_dict({}, {"format": 1, "strategy": "rehearsal", "buffers": []})
    with pytest.raises(ConfigError, match="strategy er"):
        make_er(buffer_ratio=1.5)


def test_two_stage_run_replays_first_modality_with_its_pretext_loss(tmp_path: Path) -> None:
    run = run_synthetic(tmp_path / "run", "er", demo_dir=tmp_path / "demo", overrides=("strategy.seed=5", "strategy.buffer_ratio=0.25"))
    meta = json.loads((run / "strategy" / "state.json").read_text())
    assert [(b["modality"], b["stage"]) for b in meta["buffers"]] == [("synth_a", 0), ("synth_b", 1)]
    split = json.loads((run / "metrics" / "split.json").read_text())["modalities"]
    for b in meta["buffers"]:
        train_ids = set(split[b["modality"]]["train"])  # synthetic samples are their own sources
        assert len(b["ids"]) == buffer_size(len(train_ids), 0.25, 0.01) and set(b["ids"]) <= train_ids
    steps = [json.loads(x) for x in (run / "metrics" / "steps.jsonl").read_text().splitlines()]
    replayed = [s for s in steps if s["role"] == "buffer"]
    assert replayed and all(s["stage"] == 2 and s["modality"] == "synth_a" and "mae" in s for s in replayed)


def test_min_current_fraction_is_a_validated_key() -> None:
    assert make_er().min_current_fraction == 0.5
    assert make_er(min_current_fraction=1.0).min_current_fraction == 1.0
    for bad in (-0.5, 2.0):
        with pytest.raises(ConfigError, match="min_current_fraction"):
            make_er(min_current_fraction=bad)
