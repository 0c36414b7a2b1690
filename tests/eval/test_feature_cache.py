"""The feature cache: the probes reuse the rehearsal buffer's features, never across a weight change."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api.context import RunContext
from medkit.api.features import FeatureCache
from medkit.testing.synthetic import run_synthetic


class _Images:
    """Ten seeded 3×32×32 images, labelled by parity."""

    ids = [f"s{i}" for i in range(10)]
    labels = [i % 2 for i in range(10)]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        x = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(index))
        return {"input": x, "id": self.ids[index], "label": self.labels[index]}


def _ctx() -> RunContext:
    from medkit.models.encoder import UniversalEncoder
    from medkit.registry import create

    torch.manual_seed(0)
    tok = create("tokenizer", "patch_2d", embed_dim=32, base_size=(32, 32))
    encoder = UniversalEncoder({"patch_2d": tok}, depth=2, embed_dim=32, num_heads=2)
    sets = {"img": _Images()}
    return RunContext(run_dir=Path("."), encoder=encoder, heads=torch.nn.ModuleDict(), modalities={},
                      tokenizer_of={"img": "patch_2d"}, train_sets=sets, eval_sets=sets,
                      train_indices={"img": list(range(8))}, val_indices={"img": [8, 9]}, stages=[["img"]],
                      config={}, device=torch.device("cpu"), batch_size=4,
                      feature_cache=FeatureCache(encoder))


def _fresh(ctx: RunContext, indices: list[int]) -> torch.Tensor:
    return ctx._encode_features("img", indices, ctx.batch_size, ctx.encoder)


def test_kept_rows_are_reused_for_the_same_weights_only() -> None:
    ctx = _ctx()
    cache = ctx.feature_cache
    assert cache is not None
    cache.want("img", range(8))
    first = ctx.features("img", list(range(8)))
    assert cache.computed == {"img": 8} and cache.reused == {"img": 0}
    again = ctx.features("img", [6, 1, 3])
    assert cache.computed == {"img": 8} and cache.reused == {"img": 3}
    assert torch.equal(again, first[[6, 1, 3]])
    assert torch.allclose(again, _fresh(ctx, [6, 1, 3]), atol=1e-6)
    # a mixed call computes only what is not kept, in the order asked
    mixed = ctx.features("img", [9, 2])
    assert cache.computed == {"img": 9} and torch.equal(mixed[1], first[2])

    other = torch.nn.Linear(2, 2)  # an optimizer over other parameters (a probe's) changes nothing
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    other(torch.ones(1, 2)).sum().backward()
    opt.step()
    ctx.features("img", [2])
    assert cache.reused == {"img": 5}


@pytest.mark.parametrize("change", ["adamw", "fused_adamw", "masked_fill", "load_state_dict", "invalidate"])
def test_any_weight_change_drops_the_kept_rows(change: str) -> None:
    ctx = _ctx()
    cache = ctx.feature_cache
    assert cache is not None
    cache.want("img", range(8))
    before = ctx.features("img", list(range(8)))
    weights = [p for p in ctx.encoder.parameters() if p.requires_grad]
    if change in ("adamw", "fused_adamw"):  # fused AdamW does not bump the tensors' version counters
        opt = torch.optim.AdamW(weights, lr=1e-2, **({"fused": True} if change == "fused_adamw" else {}))
        for p in weights:
            p.grad = torch.ones_like(p)
        opt.step()
    elif change == "masked_fill":  # PackNet's eval_context masks weights in place
        with torch.no_grad():
            w = ctx.encoder.blocks[0].mlp.fc1.weight
            w.masked_fill_(w > 0, 0.0)
    elif change == "load_state_dict":
        state = {k: v + 0.01 for k, v in copy.deepcopy(ctx.encoder.state_dict()).items()}
        ctx.encoder.load_state_dict(state)
    else:
        cache.invalidate()
    after = ctx.features("img", [0, 5])
    assert cache.reused == {"img": 0} and cache.computed == {"img": 10}
    assert torch.equal(after, _fresh(ctx, [0, 5]))
    if change != "invalidate":
        assert not torch.allclose(after, before[[0, 5]])


def test_another_encoder_bypasses_the_cache() -> None:
    ctx = _ctx()
    cache = ctx.feature_cache
    assert cache is not None
    cache.want("img", range(8))
    ctx.features("img", list(range(8)))
    teacher = copy.deepcopy(ctx.encoder)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05)
    got = ctx.features("img", [1, 2], encoder=teacher)
    assert cache.reused == {"img": 0}
    assert torch.equal(got, ctx._encode_features("img", [1, 2], ctx.batch_size, teacher))


RUN = ("strategy.spill_threshold=0", "strategy.buffer_ratio=0.25", "trainer.probe_linear_steps=20")


def _encoded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, int]]:
    """Every sample the run encodes for features, as (stage, modality, index)."""
    seen: list[tuple[int, str, int]] = []
    original = RunContext._encode_features

    def recording(self: RunContext, modality: str, indices: Any, bs: int, enc: Any) -> torch.Tensor:
        if enc is self.encoder:
            seen.extend((self.stage_index, modality, int(i)) for i in indices)
        return original(self, modality, indices, bs, enc)

    monkeypatch.setattr(RunContext, "_encode_features", recording)
    return seen


@pytest.mark.slow
def test_the_probes_reuse_the_buffers_features_with_the_same_results(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    demo = tmp_path / "demo"
    seen = _encoded(monkeypatch)
    cached = run_synthetic(tmp_path / "cached", "rehearsal", max_steps=3, demo_dir=demo, overrides=RUN)
    with_cache = list(seen)
    seen.clear()
    monkeypatch.setattr(FeatureCache, "want", lambda self, modality, indices: None)  # keeps nothing
    plain = run_synthetic(tmp_path / "plain", "rehearsal", max_steps=3, demo_dir=demo, overrides=RUN)
    without = list(seen)

    split = json.loads((cached / "metrics" / "split.json").read_text())
    assert split == json.loads((plain / "metrics" / "split.json").read_text())
    eval_cached = json.loads((cached / "metrics" / "eval.json").read_text())
    eval_plain = json.loads((plain / "metrics" / "eval.json").read_text())
    assert eval_cached == eval_plain  # every probe and loss value, bit for bit
    assert any("knn_acc" in e["metrics"] for e in eval_plain)
    for stage, m in enumerate(["synth_a", "synth_b"]):
        # the stage's own modality: the buffer encodes its training samples, the probes its
        # labelled training subset (every sample here) and held-out queries
        once = Counter(i for s, mod, i in with_cache if s == stage and mod == m)
        again = Counter(i for s, mod, i in without if s == stage and mod == m)
        assert set(once) == set(again) and set(once.values()) == {1}, \
            f"stage {stage + 1} encoded a sample of {m} more than once"
        assert 2 in again.values(), "without the cache the probes encode the training samples again"
