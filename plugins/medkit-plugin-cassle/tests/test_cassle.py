"""Tests of the ``cassle`` strategy: the contract, known answers for the losses, the predictor's
optimizer group and the frozen teacher on the real engine, and an exact mid-stage resume."""

from __future__ import annotations


import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api import ConfigError
from medkit.testing import StrategyContract, get_host, load_tensors, run_synthetic
from medkit_plugin_cassle.strategy import CaSSLe, distill_loss, make_predictor


class TestCaSSLeContract(StrategyContract):
    name = "cassle"
    overrides = ("strategy.pred_hidden=64",)


# -- known answers ---------------------------------------------------------------------------------
def test_losses_on_fixed_tensors() -> None:
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    target = torch.tensor([[3.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = distill_loss(pred, target, "predictive")  # BYOL form: cos = 1 and 0 → 2 − 2·(1 + 0)/2
    assert loss.item() == pytest.approx(1.0)
    assert distill_loss(target, target, "predictive").item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(-target, target, "predictive").item() == pytest.approx(4.0)
    loss.backward()
    assert target.grad is None and pred.grad is not None  # stop-gradient on the teacher side
    # mse over B × D: ((1−3)² + 0 + (0−1)² + 2²) / 4
    assert distill_loss(pred, target, "mse").item() == pytest.approx((4 + 0 + 1 + 4) / 4)
    with pytest.raises(ConfigError, match="loss_type"):
        distill_loss(pred, target, "l1")


def test_predictor_shape() -> None:
    g = make_predictor(48, 64)
    kinds = [type(m).__name__ for m in g]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert sum(p.numel() for p in g.parameters()) == 48 * 64 + 64 + 2 * 64 + 64 * 48 + 48
    assert g(torch.randn(3, 48)).shape == (3, 48)
    assert CaSSLe().pred_hidden == 2048


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="loss_type"):
        CaSSLe(loss_type="cosine")
    with pytest.raises(ConfigError, match="distill_mask_ratio"):
        CaSSLe(distill_mask_ratio=1.0)


# -- on the real engine --------------------------------------------------------------------------
OVERRIDES = ("strategy.pred_hidden=64", "strategy.pred_lr_scale=0.5", "trainer.checkpoint_every=3")


def _params(run: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run / "model.safetensors")


@pytest.mark.slow
def test_predictor_group_teacher_and_exact_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[dict[str, Any]] = []
    original_backward = CaSSLe.after_backward

    def after_backward(self: CaSSLe, ctx: Any) -> None:
        if self.predictor is not None:
            group = [g for g in ctx.optimizer.param_groups
                     if {id(p) for p in g["params"]} == {id(p) for p in self.predictor.parameters()}]
            first = ctx.optimizer.param_groups[0]
            teacher = dict(self.teacher.named_parameters())
            checks.append({
                "group": len(group) == 1 and group[0]["lr_scale"] == 0.5
                and group[0]["lr"] == pytest.approx(0.5 * first["lr"] / first["lr_scale"]),
                "grads": all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in self.predictor.parameters()),
                "teacher_eval": not any(m.training for m in self.teacher.modules()),
                "teacher_frozen": all(not p.requires_grad and p.grad is None for p in teacher.values()),
                "teacher": {n: p.detach().clone() for n, p in teacher.items()},
                "student": {n: p.detach().clone() for n, p in ctx.encoder.named_parameters()},
            })
        original_backward(self, ctx)

    monkeypatch.setattr(CaSSLe, "after_backward", after_backward)
    full = run_synthetic(tmp_path / "full", "cassle", overrides=OVERRIDES, demo_dir=tmp_path / "demo")
    assert len(checks) == 6  # every step of stage 2
    assert all(c["group"] and c["grads"] and c["teacher_eval"] and c["teacher_frozen"] for c in checks)
    # the teacher never moves and is the encoder as stage 1 left it (= the student at stage 2's first step)
    for name, value in checks[0]["teacher"].items():
        assert torch.equal(value, checks[-1]["teacher"][name])
        assert torch.equal(value, checks[0]["student"][name])
    assert any(not torch.equal(checks[-1]["student"][n], v) for n, v in checks[-1]["teacher"].items())
    rows = [json.loads(line) for line in (full / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert all("cassle" not in r for r in rows if r["stage"] == 1)
    assert all(0.0 <= r["cassle"] <= 4.0 for r in rows if r["stage"] == 2)

    # crash at step 5 of stage 2 (after the checkpoint of step 3), resume: the same final weights
    monkeypatch.setattr(CaSSLe, "after_backward", original_backward)
    original_loss = CaSSLe.loss

    def crashing_loss(self: CaSSLe, ctx: Any, batch: Any) -> Any:
        if ctx.stage_index == 1 and ctx.step == 4:
            raise RuntimeError("simulated crash")
        return original_loss(self, ctx, batch)

    monkeypatch.setattr(CaSSLe, "loss", crashing_loss)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_synthetic(tmp_path / "resumed", "cassle", overrides=OVERRIDES, demo_dir=tmp_path / "demo")
    state = load_tensors(tmp_path / "resumed" / "checkpoint" / "strategy.safetensors")
    assert any(k.startswith("teacher.blocks.") for k in state) and any(k.startswith("predictor.") for k in state)
    monkeypatch.setattr(CaSSLe, "loss", original_loss)

    from medkit.testing import Engine, NullReporter, load_config

    run = tmp_path / "resumed"
    Engine(load_config(run), run, components=get_host(), reporter=NullReporter(), resume=True).run()
    a, b = _params(full), _params(run)
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_predictor_is_created_once_and_kept_across_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CaSSLe builds its predictor once; stage 3 starts from the predictor stage 2 trained."""
    seen: list[tuple[int, int, dict[str, torch.Tensor]]] = []
    original = CaSSLe.before_stage

    def before_stage(self: CaSSLe, ctx: Any) -> None:
        original(self, ctx)
        if self.predictor is not None:
            seen.append((ctx.stage_index, id(self.predictor),
                         {k: v.detach().clone() for k, v in self.predictor.state_dict().items()}))

    monkeypatch.setattr(CaSSLe, "before_stage", before_stage)
    run = run_synthetic(tmp_path / "run", "cassle", modalities=("synth_a", "synth_b", "synth_2d"),
                        max_steps=3, overrides=("strategy.pred_hidden=16",), demo_dir=tmp_path / "demo")
    assert [s for s, _, _ in seen] == [1, 2]
    assert seen[0][1] == seen[1][1]  # the same module
    assert any(not torch.equal(seen[0][2][k], seen[1][2][k]) for k in seen[0][2])  # stage 2 trained it
    state = load_tensors(run / "strategy" / "state.safetensors")
    assert any(k.startswith("predictor.") for k in state)  # persisted for --from
    assert not any(k.startswith("teacher.") for k in state)  # the teacher belongs to a running stage only
