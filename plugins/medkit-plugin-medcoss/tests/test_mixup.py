"""Known answers for intra-modal mixup on fixed tensors with a fixed generator."""

from __future__ import annotations

import pytest
import torch

from medkit.api import ConfigError
from medkit_plugin_medcoss.mixup import draw_ratios, mix_images, mix_tokens


def test_images_mix_with_one_lambda_per_sample() -> None:
    # sample b is the constant image b, so the mixed image b is the constant λ_b·b + (1 − λ_b)·perm[b]
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 3, 2).clone()
    out = mix_images(x, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    perm, lam = torch.randperm(4, generator=g), torch.rand(4, generator=g)  # the documented draw order
    assert torch.equal(out.perm, perm) and torch.equal(out.lam, lam)
    for b in range(4):
        want = float(lam[b]) * b + (1 - float(lam[b])) * int(perm[b])
        assert torch.allclose(out.inputs[b], torch.full((1, 3, 2), want))
    assert len(set(out.lam.tolist())) == 4  # per-sample, not per-batch


def test_text_mix_swaps_tokens_and_attention_alike() -> None:
    ids = torch.tensor([[1, 11, 12, 13, 2, 0], [1, 21, 2, 0, 0, 0], [1, 31, 32, 2, 0, 0]])
    mask = (ids != 0).long()
    out = mix_tokens(ids, mask, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    perm, ratio = torch.randperm(3, generator=g), float(torch.rand(1, generator=g)[0])
    keep = torch.rand(3, 6, generator=g) < ratio
    assert torch.equal(out.perm, perm) and out.ratio == ratio and torch.equal(out.keep, keep)
    for b in range(3):
        for t in range(6):
            src = b if keep[b, t] else int(perm[b])
            assert out.ids[b, t] == ids[src, t] and out.attention_mask[b, t] == mask[src, t]


def test_text_keep_rate_is_the_batch_ratio() -> None:
    ids = torch.arange(64 * 512).view(64, 512)
    out = mix_tokens(ids, None, generator=torch.Generator().manual_seed(1))
    assert out.attention_mask is None
    assert abs(out.keep.float().mean().item() - out.ratio) < 0.01
    kept = out.ids == ids
    assert torch.equal(kept, out.keep | (out.perm.view(-1, 1) == torch.arange(64).view(-1, 1)).expand(64, 512))


def test_uniform_and_beta_ratios() -> None:
    u = draw_ratios(20000, "uniform", generator=torch.Generator().manual_seed(0))
    b = draw_ratios(20000, "beta", 0.5, generator=torch.Generator().manual_seed(0))
    assert abs(u.var().item() - 1 / 12) < 0.005  # U(0, 1)
    assert abs(b.var().item() - 1 / 8) < 0.005  # Beta(½, ½): 1 / (4 (2α + 1))
    again = draw_ratios(5, "beta", 0.5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(again, draw_ratios(5, "beta", 0.5, generator=torch.Generator().manual_seed(9)))
    with pytest.raises(ConfigError, match="mixup_dist"):
        draw_ratios(2, "gaussian")


def test_draws_come_from_the_global_rng_without_a_generator() -> None:
    x = torch.randn(5, 1, 4, 4)
    torch.manual_seed(7)
    a = mix_images(x)
    torch.manual_seed(7)
    b = mix_images(x)
    assert torch.equal(a.inputs, b.inputs)
    torch.manual_seed(8)
    assert not torch.equal(mix_images(x).lam, a.lam)
