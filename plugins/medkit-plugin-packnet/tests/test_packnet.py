"""Tests of the ``packnet`` strategy: the contract, known answers for pruning, and the PackNet
invariant on the real engine (an earlier modality's features never change)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api import ConfigError
from medkit.testing import StrategyContract, read_matrix, run_synthetic
from medkit_plugin_packnet.masks import FREE, assign_owners, default_ratios, eval_keep
from medkit_plugin_packnet.strategy import PackNet


class TestPackNetContract(StrategyContract):
    name = "packnet"


# -- known answers ---------------------------------------------------------------------------------
def test_assign_owners_keeps_the_largest_free_weights() -> None:
    weight = torch.tensor([[0.1, -0.5, 0.3], [0.05, 0.3, -0.9]])
    owner = torch.tensor([[1, 0, 0], [0, 0, 1]], dtype=torch.uint8)
    # free: -0.5, 0.3, 0.05, 0.3 → prune floor(0.5·4) = 2 → keep |−0.5| and the first 0.3 (tie → position)
    out = assign_owners(weight, owner, 1, 0.5)
    assert out.tolist() == [[1, 2, 2], [0, 0, 1]]
    assert owner.tolist() == [[1, 0, 0], [0, 0, 1]]  # input untouched
    # floor(0.6·4) = 2 pruned; ratio 0 keeps every free weight
    assert assign_owners(weight, owner, 1, 0.6).tolist() == [[1, 2, 2], [0, 0, 1]]
    assert assign_owners(weight, owner, 2, 0.0).tolist() == [[1, 3, 3], [3, 3, 1]]
    with pytest.raises(ValueError):
        assign_owners(weight, owner, 1, 1.0)


def test_default_ratios_give_equal_shares() -> None:
    assert default_ratios(1) == [0.0]
    ratios = default_ratios(4)
    assert ratios == pytest.approx([3 / 4, 2 / 3, 1 / 2, 0.0])
    owner = torch.zeros(1200, dtype=torch.uint8)
    weight = torch.randn(1200, generator=torch.Generator().manual_seed(0))
    for k, r in enumerate(ratios):
        owner = assign_owners(weight, owner, k, r)
    assert [int((owner == k + 1).sum()) for k in range(4)] == [300, 300, 300, 300]


def test_eval_keep() -> None:
    owner = torch.tensor([0, 1, 2, 3], dtype=torch.uint8)
    assert eval_keep(owner, 0).tolist() == [False, True, False, False]
    assert eval_keep(owner, 1).tolist() == [False, True, True, False]
    assert eval_keep(owner, 2, pruned=False).tolist() == [True, True, True, True]
    assert FREE == 0


def test_bad_ratios_are_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="prune_ratios"):
        PackNet(prune_ratios=[0.5, 1.5])


# -- the invariant on the real engine ------------------------------------------------------------
def test_earlier_modalities_are_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records: list[dict[str, Any]] = []
    original = PackNet.after_stage

    def after_stage(self: PackNet, ctx: Any) -> None:
        original(self, ctx)
        enc = ctx.encoder
        enc.eval()
        rec: dict[str, Any] = {"stage": ctx.stage_index, "owners": {n: o.clone() for n, o in self.owners.items()},
                               "params": {n: p.detach().clone() for n, p in enc.named_parameters()}}
        with torch.no_grad():
            for m in ctx.seen:
                batch = ctx.load_batch(m, ctx.val_indices[m][:2])
                with self.eval_context(ctx, m):
                    rec[m] = ctx.encode(batch).x.clone()
                rec[m + "/all"] = ctx.encode(batch).x.clone()
        enc.train()
        records.append(rec)

    drift: list[int] = []
    original_backward = PackNet.after_backward

    def after_backward(self: PackNet, ctx: Any) -> None:
        # owned weights must hold their frozen values at every step (AdamW's decay is undone each step)
        weights = dict(ctx.encoder.named_parameters())
        drift.append(sum(int((weights[n][mask] != values).sum()) for n, (mask, values) in self._frozen.items()))
        original_backward(self, ctx)

    monkeypatch.setattr(PackNet, "after_stage", after_stage)
    monkeypatch.setattr(PackNet, "after_backward", after_backward)
    run = run_synthetic(tmp_path / "run", "packnet", ("synth_a", "synth_b", "synth_2d"), max_steps=4,
                        overrides=("strategy.finetune_steps=2",), demo_dir=tmp_path / "demo")
    first, second, third = records
    assert len(drift) == 12 and not any(drift)
    # the invariant: features of earlier modalities are bit-identical in their eval_context
    assert torch.equal(first["synth_a"], second["synth_a"]) and torch.equal(first["synth_a"], third["synth_a"])
    assert torch.equal(second["synth_b"], third["synth_b"])
    # ... and not trivially: the later stages did change the trunk that synth_a would see unmasked
    assert not torch.equal(third["synth_a/all"], third["synth_a"])

    owners = third["owners"]
    for name, o in owners.items():
        n = o.numel()
        s0 = n - int(2 / 3 * n)
        assert int((first["owners"][name] == 1).sum()) == s0  # default ratios [2/3, 1/2, 0]
        assert torch.equal(first["owners"][name] == 1, o == 1)  # ownership never changes hands
        assert torch.equal(second["owners"][name] >= 1, (o >= 1) & (o <= 2))
        assert int((o == FREE).sum()) == 0  # the last stage keeps everything left
        w = first["params"][name]
        assert bool((w[first["owners"][name] == FREE] == 0).all())  # released weights are zero

    # biases, norms, LayerScale, CLS and the 3D tokenizer froze after stage 1; patch_2d trained in stage 3
    changed_2d = []
    for name, p in third["params"].items():
        if name.startswith("tokenizers.patch_2d."):
            changed_2d.append(not torch.equal(p, second["params"][name]))
        elif name not in owners:
            assert torch.equal(p, first["params"][name]), name
    assert changed_2d and all(changed_2d)

    mods, rows = read_matrix(run / "metrics" / "matrix.csv")
    a = mods.index("synth_a")
    assert rows[0][a] == rows[1][a] == rows[2][a]
    meta = json.loads((run / "strategy" / "state.json").read_text())
    assert meta["pruned"] == [0, 1, 2] and meta["ratios"] == pytest.approx([2 / 3, 0.5, 0.0])


def test_ratio_list_must_cover_every_stage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="one ratio per stage"):
        run_synthetic(tmp_path / "run", "packnet", max_steps=1, overrides=("strategy.prune_ratios=[0.5]",),
                      demo_dir=tmp_path / "demo")
