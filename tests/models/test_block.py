"""medkit's transformer block against timm's ``vision_transformer.Block``: same keys, same numbers."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch

from medkit.models.encoder import Block

timm_vit = pytest.importorskip("timm.models.vision_transformer")


def _pair(**kw: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    theirs = timm_vit.Block(48, 4, mlp_ratio=4.0, qkv_bias=True, **kw)
    torch.manual_seed(0)
    ours = Block(48, 4, mlp_ratio=4.0, qkv_bias=True, **kw)
    return theirs, ours


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("kw", [
    {"init_values": 1e-3, "drop_path": 0.3, "norm_layer": torch.nn.LayerNorm},  # the encoder's blocks
    {"norm_layer": partial(torch.nn.LayerNorm, eps=1e-6)},  # the MAE decoder's blocks
], ids=["encoder", "decoder"])
def test_block_matches_timm_in_training_forward_and_backward(kw: dict[str, Any], amp: bool) -> None:
    """Same seeded initialisation and state-dict keys; in train mode (drop path drawn from the same
    global generator, GELU recomputed in our backward) the outputs and all gradients are identical."""
    theirs, ours = _pair(**kw)
    s_theirs, s_ours = theirs.state_dict(), ours.state_dict()
    assert list(s_theirs) == list(s_ours)
    assert all(torch.equal(s_theirs[k], s_ours[k]) for k in s_theirs)
    x = torch.randn(5, 11, 48)
    results = []
    for block in (theirs, ours):
        block.train()
        xx = x.clone().requires_grad_()
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = block(xx)
        (y.float() ** 2).sum().backward()
        results.append((y.detach(), xx.grad, {n: p.grad for n, p in block.named_parameters()}))
    (y1, g1, p1), (y2, g2, p2) = results
    assert torch.equal(y1, y2) and torch.equal(g1, g2)
    assert all(torch.equal(p1[n], p2[n]) for n in p1)


def test_block_eval_and_no_grad_paths_match_timm() -> None:
    theirs, ours = _pair(init_values=1e-3, drop_path=0.3, norm_layer=torch.nn.LayerNorm)
    x = torch.randn(2, 7, 48)
    mask = torch.zeros(2, 1, 1, 7).masked_fill(torch.tensor([False] * 5 + [True] * 2), float("-inf"))
    with torch.no_grad():
        assert torch.equal(theirs.eval()(x, attn_mask=mask), ours.eval()(x, attn_mask=mask))
