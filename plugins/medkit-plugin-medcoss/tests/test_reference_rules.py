"""Known answers for the reference's per-centre buffer rule, the over-ratio warning, MLM-corrupted
buffer text and the ``min_current_fraction`` key (issue 11, item 5)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from medkit.api import Batch, ConfigError
from medkit_plugin_medcoss.buffer import buffer_sizes, select_buffer
from medkit_plugin_medcoss.strategy import make_rehearsal


def test_reference_rule_scales_with_n() -> None:
    # main_buffer_kmean.py: K = int(N·0.01), k = int(N·0.05 // K)
    assert buffer_sizes(199, 0.05, 0.01) == (1, 9)  # the example: 9 per centre, not 5
    assert buffer_sizes(199, 0.05, 0.01, "fixed") == (1, 5)
    assert buffer_sizes(377_000, 0.05, 0.01) == (3770, 5) == buffer_sizes(377_000, 0.05, 0.01, "fixed")
    assert buffer_sizes(450, 0.10, 0.01) == (4, 11)  # int(45 // 4)
    assert buffer_sizes(450, 0.10, 0.01, "fixed") == (4, 10)
    assert buffer_sizes(21, 0.05, 0.01) == (1, 1)  # int(1.05 // 1); "fixed" keeps 5
    assert buffer_sizes(300, 0.03, 0.01) == (3, 3)  # 9.000000000000002 // 3 and float noise
    with pytest.raises(ConfigError, match="per_center_rule"):
        buffer_sizes(100, 0.05, 0.01, "nearest")


def _features(n: int) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(n))


def test_buffer_size_and_over_ratio_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="medkit_plugin_medcoss.buffer"):
        sel = select_buffer(_features(200), buffer_ratio=0.05, num_center=0.01, seed=0)
    assert len(sel.rows) == 10 and (sel.num_clusters, sel.per_cluster) == (2, 5)
    assert not caplog.records  # exactly 5 %
    with caplog.at_level(logging.WARNING, logger="medkit_plugin_medcoss.buffer"):
        sel = select_buffer(_features(60), buffer_ratio=0.05, num_center=0.01, seed=0, rule="fixed")
    assert len(sel.rows) == 5  # 8.3 % of 60: the fixed rule's floor
    assert any("larger than buffer_ratio" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medkit_plugin_medcoss.buffer"):
        sel = select_buffer(_features(60), buffer_ratio=0.05, num_center=0.01, seed=0)
    assert len(sel.rows) == 3 and not caplog.records  # int(3.0 // 1) = 3 = 5 % of 60
    with caplog.at_level(logging.WARNING, logger="medkit_plugin_medcoss.buffer"):
        select_buffer(_features(10), buffer_ratio=0.05, num_center=0.01, seed=0)
    assert any("larger than buffer_ratio" in r.getMessage() for r in caplog.records)  # 1 of 10 > 0.5


def test_defaults_and_validation() -> None:
    s = make_rehearsal()
    assert s.per_center_rule == "reference" and s.mlm_buffer is True and s.min_current_fraction == 0.5
    assert make_rehearsal(min_current_fraction=0.8).min_current_fraction == 0.8
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="min_current_fraction"):
            make_rehearsal(min_current_fraction=bad)
    with pytest.raises(ConfigError, match="per_center_rule"):
        make_rehearsal(per_center_rule="nearest")


class _Masker(torch.nn.Module):
    """Stand-in text objective: ``mask`` replaces every even position by id 7."""

    def mask(self, encoder: Any, batch: Batch, *, generator: Any = None) -> Any:
        ids = batch.inputs.clone()
        ids[:, ::2] = 7
        return SimpleNamespace(inputs=ids)


@pytest.mark.parametrize("mlm_buffer", [True, False])
def test_buffer_text_is_mlm_corrupted_before_mixup(make_ctx: Any, monkeypatch: pytest.MonkeyPatch,
                                                   mlm_buffer: bool) -> None:
    import medkit_plugin_medcoss.strategy as st

    ctx = make_ctx("text_1d", ids={"rep": ["r0", "r1"]})
    ctx.heads["rep"] = _Masker()
    ids = torch.tensor([[2, 11, 12, 13, 3], [2, 14, 15, 16, 3]])
    batch = Batch(modality="rep", inputs=ids, attention_mask=torch.ones_like(ids), role="buffer")
    strategy = make_rehearsal(mlm_buffer=mlm_buffer)
    strategy.teacher = st.snapshot_teacher(ctx.encoder)
    seen: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(st, "mix_tokens", lambda x, m, **kw: (seen.__setitem__("mix", x.clone()),
                                                              SimpleNamespace(ids=x, attention_mask=m))[1])
    monkeypatch.setattr(st, "distillation_loss",
                        lambda c, b, t, **kw: (seen.__setitem__("distill", b.inputs.clone()), torch.tensor(0.5))[1])
    out = strategy.loss(ctx, batch)
    expected = ids.clone()
    if mlm_buffer:
        expected[:, ::2] = 7
    assert torch.equal(seen["mix"], expected) and torch.equal(seen["distill"], expected)
    assert out.loss.item() == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs,key", [({"buffer_ratio": 0.0}, "buffer_ratio"), ({"num_center": 1.5}, "num_center"),
                                        ({"per_center_rule": "nearest"}, "per_center_rule")])
def test_bad_buffer_sizes_are_refused_when_built_and_when_sized(kwargs, key) -> None:
    """One check serves the strategy (at build time, before any stage) and buffer_sizes (the bench
    and select_buffer call it directly): both refuse, naming the strategy key."""
    from medkit.api import ConfigError
    from medkit_plugin_medcoss.buffer import buffer_sizes
    from medkit_plugin_medcoss.strategy import make_rehearsal

    with pytest.raises(ConfigError, match=f"strategy rehearsal: .*{key}"):
        make_rehearsal(**kwargs)
    sizes = {"buffer_ratio": 0.05, "num_center": 0.01, "rule": "reference"}
    sizes.update({("rule" if k == "per_center_rule" else k): v for k, v in kwargs.items()})
    with pytest.raises(ConfigError, match=f"strategy rehearsal: .*{key}"):
        buffer_sizes(100, sizes["buffer_ratio"], sizes["num_center"], sizes["rule"])


@pytest.mark.slow
def test_a_rehearsal_run_records_the_mix_it_trained_and_keeps_the_floor(tmp_path) -> None:
    """The manifest's per-stage mix is the count of steps.jsonl rows by modality and role, and with
    strategy.min_current_fraction=0.8 stage 2 trains at least 8 of its 10 steps on its own data."""
    import json

    from medkit.testing import run_synthetic

    run = run_synthetic(tmp_path / "run", "rehearsal", max_steps=10, demo_dir=tmp_path / "demo",
                        overrides=("strategy.spill_threshold=0", "strategy.buffer_ratio=1.0",
                                   "strategy.num_center=0.5", "strategy.min_current_fraction=0.8"))
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    rows = [json.loads(line) for line in (run / "metrics" / "steps.jsonl").read_text().splitlines()]
    for entry in stages:
        counted: dict[str, int] = {}
        for r in rows:
            if r["stage"] == entry["index"]:
                key = f"{r['modality']}/{r['role']}"
                counted[key] = counted.get(key, 0) + 1
        assert entry["mix"] == counted
    second = stages[1]["mix"]
    assert sum(second.values()) == 10 and second.get("synth_b/current", 0) >= 8 and second.get("synth_a/buffer", 0) >= 1
