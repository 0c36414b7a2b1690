"""Tests of the ``ewc`` strategy: the contract, known answers for the Fisher, the penalty and the
online update, and its plumbing on the real engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from medkit.api import ConfigError
from medkit.testing import StrategyContract, load_tensors, run_synthetic
from medkit_plugin_ewc.fisher import diagonal_fisher, ewc_penalty, online_update
from medkit_plugin_ewc.strategy import EWC


class TestEWCContract(StrategyContract):
    name = "ewc"
    overrides = ("strategy.fisher_batches=2",)


# -- known answers --------------------------------------------------------------------------------
def test_fisher_matches_the_analytic_minibatch_gradients() -> None:
    """Linear regression ``L_k = mean_b r_b²`` with ``r_b = w·x_b + c − y_b``:
    ``∂L_k/∂w = (2/B) Σ_b r_b x_b`` and ``∂L_k/∂c = (2/B) Σ_b r_b``."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    batches = [(torch.randn(4, 3), torch.randn(4)) for _ in range(5)]

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return (model(x).squeeze(-1) - y).pow(2).mean()

    fisher = diagonal_fisher(dict(model.named_parameters()), batches, loss_fn)
    w, c = model.weight.detach()[0], model.bias.detach()[0]
    gw2, gc2 = torch.zeros(3), torch.zeros(())
    for x, y in batches:  # explicit loop: the squared minibatch-mean gradient, averaged over batches
        r = x @ w + c - y
        gw2 += ((2 / len(y)) * (r[:, None] * x).sum(0)) ** 2
        gc2 += ((2 / len(y)) * r.sum()) ** 2
    torch.testing.assert_close(fisher["weight"][0], gw2 / len(batches))
    torch.testing.assert_close(fisher["bias"][0], gc2 / len(batches))
    assert fisher["weight"].shape == (1, 3) and fisher["weight"].dtype == torch.float32


def test_fisher_of_an_unused_parameter_is_zero() -> None:
    a, b = nn.Parameter(torch.tensor([2.0])), nn.Parameter(torch.tensor([5.0]))
    fisher = diagonal_fisher({"a": a, "b": b}, [1.0, 3.0], lambda s: (s * a).sum())
    assert fisher["a"].item() == pytest.approx((1.0 + 9.0) / 2)  # gradients 1 and 3
    assert fisher["b"].item() == 0.0


def test_penalty_on_fixed_tensors() -> None:
    theta = {"w": torch.tensor([1.0, 1.0]), "v": torch.tensor([[3.0]])}
    first = ({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([0.0, 2.0])})  # 1·1² + 2·(−1)² = 3
    second = ({"w": torch.tensor([0.5, 0.0]), "v": torch.tensor([[4.0]])},
              {"w": torch.tensor([3.0, 9.0]), "v": torch.tensor([[1.0]])})  # 0.5·(−2)² + 0 + 4·2² = 18
    assert ewc_penalty(theta, [first]).item() == pytest.approx(3.0)
    assert ewc_penalty(theta, [first, second]).item() == pytest.approx(21.0)
    assert ewc_penalty(theta, []).item() == 0.0
    p = {"w": nn.Parameter(torch.tensor([1.0, 1.0]))}
    ewc_penalty(p, [first]).backward()  # d/dθ = 2 F (θ − θ*)
    torch.testing.assert_close(p["w"].grad, torch.tensor([2.0, -4.0]))


def test_online_update() -> None:
    old = {"w": torch.tensor([2.0, 4.0])}
    new = {"w": torch.tensor([1.0, 1.0])}
    torch.testing.assert_close(online_update(old, new, 0.5)["w"], torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(online_update(None, new, 0.5)["w"], new["w"])
    with pytest.raises(ValueError, match="different parameters"):
        online_update({"x": torch.zeros(1)}, new, 1.0)


def test_bad_config_is_a_clear_error() -> None:
    from medkit_plugin_ewc.strategy import EWC

    with pytest.raises(ConfigError, match="strategy.mode"):
        EWC(mode="offline")
    with pytest.raises(ConfigError, match="fisher_batches"):
        EWC(fisher_batches=0)


# -- on the real engine --------------------------------------------------------------------------
def _state(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return load_tensors(run / "strategy" / "state.safetensors"), \
        json.loads((run / "strategy" / "state.json").read_text())


def test_separate_and_online_runs(tmp_path: Path) -> None:
    """Two stages: θ* of the last anchor is the final trunk; the penalty is 0 at the first step of
    stage 2 and grows after; online F = γ·F₀ + F₁ with F₀, F₁ from the separate run (stage 2 trains
    identically in both modes since there is one anchor either way)."""
    common = ("strategy.fisher_batches=2", "strategy.lam=1000.0")
    sep = run_synthetic(tmp_path / "sep", "ewc", max_steps=3, overrides=common, demo_dir=tmp_path / "demo")
    online = common + ("strategy.mode=online", "strategy.gamma=0.5")
    onl = run_synthetic(tmp_path / "onl", "ewc", max_steps=3, overrides=online, demo_dir=tmp_path / "demo")
    t_sep, m_sep = _state(sep)
    t_onl, m_onl = _state(onl)
    assert m_sep == {"format": 1, "mode": "separate", "anchors": [{"stages": [0]}, {"stages": [1]}]}
    assert m_onl == {"format": 1, "mode": "online", "anchors": [{"stages": [0, 1]}]}

    model = load_tensors(sep / "model.safetensors")
    trunk = {k[len("encoder."):]: v for k, v in model.items() if k.startswith(("encoder.blocks.", "encoder.norm."))}
    shared = {k[len("encoder."):] for k in model if k.startswith("encoder.")}  # one tokenizer: patch_3d
    assert {k.split(".", 2)[2] for k in t_sep if k.startswith("fisher.1.")} == shared
    for name, value in trunk.items():
        assert torch.equal(t_sep[f"theta.1.{name}"], value.float())
    f0 = {k[len("fisher.0."):]: v for k, v in t_sep.items() if k.startswith("fisher.0.")}
    assert all((f >= 0).all() for f in f0.values()) and sum(float(f.sum()) for f in f0.values()) > 0
    for name in trunk:
        torch.testing.assert_close(t_onl[f"fisher.0.{name}"], 0.5 * f0[name] + t_sep[f"fisher.1.{name}"],
                                   rtol=1e-5, atol=1e-12)
        assert torch.equal(t_onl[f"theta.0.{name}"], t_sep[f"theta.1.{name}"])

    rows = [json.loads(line) for line in (sep / "metrics" / "steps.jsonl").read_text().splitlines()]
    stage2 = [r for r in rows if r["stage"] == 2]
    assert all("ewc" not in r for r in rows if r["stage"] == 1)
    assert stage2[0]["ewc"] == 0.0  # θ = θ* before the first step of stage 2
    assert all(r["ewc"] > 0 for r in stage2[1:])


# -- shared parameters (issue 11): tokenizers and the CLS token are consolidated too ----------------
def test_trained_parameters_cover_the_stages_tokenizers_only() -> None:
    from types import SimpleNamespace

    from medkit.api import UniversalEncoder
    from medkit_plugin_ewc.strategy import trained_parameters

    toks = {"patch_2d": nn.Linear(2, 8), "text_1d": nn.Embedding(5, 8)}
    enc = UniversalEncoder(toks, depth=1, embed_dim=8, num_heads=2)
    ctx = SimpleNamespace(encoder=enc, stage=["xray"], tokenizer_of={"xray": "patch_2d", "report": "text_1d"})
    names = set(trained_parameters(ctx))
    assert {"tokenizers.patch_2d.weight", "tokenizers.patch_2d.bias", "cls_token"} <= names
    assert set(enc.trunk_parameters()) <= names
    assert not any(n.startswith("tokenizers.text_1d.") for n in names)


def test_a_shared_tokenizer_is_penalised(tmp_path: Path) -> None:
    """Two modalities on one tokenizer (patch_3d): stage 1's anchor covers that tokenizer with a
    non-zero Fisher, and moving only the tokenizer changes the penalty by exactly Σ F·δ²."""
    from medkit_plugin_ewc.strategy import EWC

    run = run_synthetic(tmp_path / "run", "ewc", overrides=("strategy.fisher_batches=2", "strategy.lam=1.0"),
                        demo_dir=tmp_path / "demo")
    state = load_tensors(run / "strategy" / "state.safetensors")
    tok = {k[len("fisher.0."):]: v for k, v in state.items() if k.startswith("fisher.0.tokenizers.patch_3d.")}
    assert tok and sum(float(v.sum()) for v in tok.values()) > 0
    assert "fisher.0.cls_token" in state
    meta = json.loads((run / "strategy" / "state.json").read_text())
    ewc = EWC(lam=1.0)
    ewc.load_state_dict(state, meta)
    fisher, theta = ewc.anchors[0]
    params = {n: nn.Parameter(t.clone()) for n, t in theta.items()}
    name = next(iter(tok))
    delta = 0.01
    with torch.no_grad():
        params[name] += delta
    from medkit_plugin_ewc.fisher import ewc_penalty

    got = ewc_penalty(params, [ewc.anchors[0]]).item()
    assert got == pytest.approx(float(fisher[name].sum()) * delta ** 2, rel=1e-4)


def _plan_ctx(train: dict[str, list[int]], batch_size: int = 4) -> object:
    from types import SimpleNamespace
    return SimpleNamespace(batch_size=batch_size, stage=tuple(train), train_indices=train, seed=3, stage_index=1)


def test_default_fisher_is_one_full_pass_over_the_training_data() -> None:
    """``fisher_batches=None`` (the default): every training sample of every modality of the stage
    exactly once, in minibatches of at most the batch size, each minibatch from one modality."""
    train = {"a": list(range(0, 11)), "b": list(range(100, 107))}
    strategy = EWC()
    assert strategy.fisher_batches is None
    plan = strategy.fisher_plan(_plan_ctx(train))  # type: ignore[arg-type]
    for m, pool in train.items():
        seen = [i for mod, idx in plan if mod == m for i in idx]
        assert sorted(seen) == pool  # each sample exactly once
    assert all(0 < len(idx) <= 4 and set(idx) <= set(train[m]) for m, idx in plan)
    assert len(plan) == 3 + 2  # ceil(11/4) + ceil(7/4)
    assert plan == EWC().fisher_plan(_plan_ctx(train))  # type: ignore[arg-type]  # seeded, reproducible
    sampled = EWC(fisher_batches=2).fisher_plan(_plan_ctx(train))  # type: ignore[arg-type]
    assert len(sampled) == 2 and sum(len(idx) for _, idx in sampled) == 8
