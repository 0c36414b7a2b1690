"""The refitted-decoder pretext loss (``refit_loss``): a fresh head fitted on the frozen encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api import RunContext, StageState, UniversalEncoder
from medkit.eval.evaluate import evaluate_cells, pretext_loss
from medkit.eval.probes import ProbeOptions
from medkit.eval.refit import refit_loss
from medkit.testing import create, run_synthetic

MOD = "waves"


class Waves:
    """Shallow plane waves on a per-image brightness, both a function of the index: masked patches
    are predictable from the visible ones, so an MAE learns something a decoder can lose."""

    def __init__(self, n: int) -> None:
        self.ids = [f"w/{i:03d}" for i in range(n)]
        self.labels = [i % 2 for i in range(n)]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        g = torch.Generator().manual_seed(index)
        a, b, c, level = (torch.rand(4, generator=g) * torch.tensor([0.3, 0.3, 6.28, 4.0])).tolist()
        v, u = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        x = 0.3 * torch.sin(a * u + b * v + c) + level - 2.0
        return {"input": x.expand(3, 32, 32).clone(), "id": self.ids[index], "label": self.labels[index]}


def _score(ctx: RunContext, m: str, head: torch.nn.Module, max_batches: int) -> float:
    return pretext_loss(ctx, m, max_batches=max_batches, head=head)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunContext, Any]:
    """A tiny 2D encoder (with a final LayerNorm) and its MAE head (raw-pixel loss), trained together."""
    root = tmp_path_factory.mktemp("refit")
    data = Waves(32)
    torch.manual_seed(0)
    tok = create("tokenizer", "patch_2d", embed_dim=32, base_size=(32, 32))
    encoder = UniversalEncoder({"patch_2d": tok}, depth=2, embed_dim=32, num_heads=2, final_norm=True)

    def make_head(m: str) -> torch.nn.Module:
        return create("objective", "mae", encoder=encoder, tokenizer="patch_2d", norm_pix_loss=False)

    heads = torch.nn.ModuleDict({MOD: make_head(MOD)})
    ctx = RunContext(run_dir=root, encoder=encoder, heads=heads, modalities={}, tokenizer_of={MOD: "patch_2d"},
                     train_sets={MOD: data}, eval_sets={MOD: data}, train_indices={MOD: list(range(24))},
                     val_indices={MOD: list(range(24, 32))}, stages=[[MOD]], config={},
                     device=torch.device("cpu"), stage_index=0, batch_size=4)
    ctx.begin_stage(StageState(index=0))
    opt = torch.optim.AdamW([*encoder.parameters(), *heads.parameters()], lr=2e-3)
    for step in range(200):
        batch = ctx.load_batch(MOD, [(4 * step + k) % 24 for k in range(4)])
        loss = ctx.pretext_loss(batch, generator=torch.Generator().manual_seed(step)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ctx, make_head


def test_an_unchanged_encoder_scores_the_same_and_nothing_else_moves(trained: tuple[RunContext, Any]) -> None:
    ctx, make_head = trained
    before = {k: v.clone() for k, v in ctx.encoder.state_dict().items()}
    rng = torch.get_rng_state()
    first = refit_loss(ctx, MOD, make_head, steps=20, lr=1e-3, max_batches=2, score=_score)
    second = refit_loss(ctx, MOD, make_head, steps=20, lr=1e-3, max_batches=2, score=_score)
    assert first == second  # bit-identical: seeded head, order, masking
    assert all(torch.equal(before[k], v) for k, v in ctx.encoder.state_dict().items())  # frozen
    assert all(p.requires_grad for p in ctx.encoder.parameters()) and ctx.encoder.training
    assert torch.equal(rng, torch.get_rng_state())  # the run's own draws are not disturbed


def test_an_information_preserving_change_is_no_representation_forgetting(trained: tuple[RunContext, Any]) -> None:
    """Flipping the sign of the encoder's output (its final LayerNorm's affine) loses nothing a decoder
    needs: the run's own (stale) head gets much worse, a refitted head does as well as before."""
    ctx, make_head = trained
    steps = 150
    stale_before = pretext_loss(ctx, MOD, max_batches=2)
    refit_before = refit_loss(ctx, MOD, make_head, steps=steps, lr=1e-3, max_batches=2, score=_score)
    norm = ctx.encoder.norm
    with torch.no_grad():
        norm.weight.neg_()
        norm.bias.neg_()
    try:
        stale_after = pretext_loss(ctx, MOD, max_batches=2)
        refit_after = refit_loss(ctx, MOD, make_head, steps=steps, lr=1e-3, max_batches=2, score=_score)
    finally:
        with torch.no_grad():
            norm.weight.neg_()
            norm.bias.neg_()
    stale_forgetting = stale_after - stale_before
    refit_forgetting = refit_after - refit_before
    assert stale_forgetting > 0.3 * stale_before  # the stale decoder reads the flipped features badly
    assert abs(refit_forgetting) < 0.1 * refit_before  # ~0: the representation is all there
    assert abs(refit_forgetting) < 0.25 * stale_forgetting


def test_evaluate_cells_reports_both_losses_only_where_asked(trained: tuple[RunContext, Any]) -> None:
    from contextlib import nullcontext

    ctx, make_head = trained
    strategy = type("S", (), {"eval_context": staticmethod(lambda c, m: nullcontext())})()
    opts = ProbeOptions(knn_k=0, linear_steps=0, refit_steps=5)
    values, missing = evaluate_cells(ctx, strategy, max_batches=1, options=opts, make_head=make_head)
    assert set(values) == {"pretext_loss", "refit_loss"} and MOD in values["refit_loss"]
    values, _ = evaluate_cells(ctx, strategy, max_batches=1, options=ProbeOptions(knn_k=0, linear_steps=0,
                                                                                   refit_steps=0),
                               make_head=make_head)
    assert set(values) == {"pretext_loss"}


@pytest.mark.slow
def test_a_run_writes_the_refitted_decoder_matrix(tmp_path: Path) -> None:
    run = run_synthetic(tmp_path / "run", "sequential", demo_dir=tmp_path / "demo", max_steps=4,
                        overrides=("trainer.probe_refit_steps=3",))
    records = json.loads((run / "metrics" / "eval.json").read_text())
    assert [sorted(r["metrics"]["refit_loss"]) for r in records] == [["synth_a"], ["synth_a", "synth_b"]]
    assert (run / "metrics" / "matrix_refit_loss.csv").is_file()
