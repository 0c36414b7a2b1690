"""The legacy trunk (``encoder.legacy``): the reference's text attention mask, its batch-scrambled
layout, causality, and the parameter count of the ``base`` trunk."""

from __future__ import annotations

import math

import pytest
import torch

from medkit.models.encoder import Tokens, UniversalEncoder, count_parameters
from medkit.api.errors import ConfigError
from medkit.models.legacy import legacy_text_attention_mask, padding_source

B, H, L, D = 3, 2, 6, 8
LENGTHS = [6, 3, 5]  # real tokens per sample; the rest is padding


def _padding(lengths: list[int], length: int = L) -> torch.Tensor:
    return torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]  # [B, L] True = pad


def _trunk(depth: int = 1, legacy: bool = True, seed: int = 0) -> UniversalEncoder:
    torch.manual_seed(seed)
    enc = UniversalEncoder({}, depth=depth, embed_dim=D, num_heads=H, drop_path=0.0, legacy=legacy).eval()
    with torch.no_grad():
        for block in enc.blocks:  # LayerScale 1 so that attention differences are not scaled away
            block.ls1.gamma.fill_(1.0)
            block.ls2.gamma.fill_(1.0)
    return enc


def _manual_block(block: torch.nn.Module, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """One pre-norm block computed head by head; ``allowed [B, H, L, L]`` says which keys each query sees."""
    b, n, d = x.shape
    hd = d // H
    qkv = block.attn.qkv(block.norm1(x)).reshape(b, n, 3, H, hd).permute(2, 0, 3, 1, 4)  # [3, B, H, L, hd]
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
    attn = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(b, n, d)
    x = x + block.ls1(block.attn.proj(out))
    return x + block.ls2(block.mlp(block.norm2(x)))


def _allowed(pad: torch.Tensor, *, scrambled: bool) -> torch.Tensor:
    """Keys each (sample, head) may see: causal AND the padding of sample (b·H + h) mod B (reference) or b."""
    batch, n = pad.shape
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    allowed = torch.zeros(batch, H, n, n, dtype=torch.bool)
    for b in range(batch):
        for h in range(H):
            src = (b * H + h) % batch if scrambled else b
            allowed[b, h] = causal & ~pad[src][None, :]
    return allowed


def test_mask_rows_are_causal_and_take_the_padding_of_sample_bH_plus_h_mod_B() -> None:
    pad = _padding(LENGTHS)
    mask = legacy_text_attention_mask(pad, H)  # [B, H, L, L]
    assert mask.shape == (B, H, L, L) and set(mask.unique().tolist()) == {-10000.0, 0.0}
    expected = torch.where(_allowed(pad, scrambled=True), 0.0, -10000.0)
    assert torch.equal(mask, expected)
    # sample 0 head 1 reads sample 1's padding (3 real tokens), sample 1 head 0 reads sample 2's (5)
    assert [padding_source(b, h, batch=B, num_heads=H) for b in range(B) for h in range(H)] == [0, 1, 2, 0, 1, 2]
    assert (mask[0, 1, 5, 3:] == -10000.0).all() and (mask[0, 0, 5, :] == 0.0).all()
    assert (mask[1, 0, 4, :5] == 0.0).all(), "sample 1 (3 real tokens) head 0 attends to keys 3-4 of sample 2"
    one = legacy_text_attention_mask(pad[1:2], H)
    assert torch.equal(one, torch.where(_allowed(pad[1:2], scrambled=False), 0.0, -10000.0))


def test_head_h_of_sample_b_attends_with_the_padding_of_sample_bH_plus_h_mod_B() -> None:
    enc = _trunk()
    x = torch.randn(B, L, D)
    pad = _padding(LENGTHS)
    out = enc.forward_tokens(Tokens(x=x, padding_mask=pad), add_cls=False).x
    with torch.no_grad():
        scrambled = _manual_block(enc.blocks[0], x, _allowed(pad, scrambled=True))
        per_sample = _manual_block(enc.blocks[0], x, _allowed(pad, scrambled=False))
    assert torch.allclose(out, scrambled, atol=1e-5)
    effect = (out - per_sample).abs().amax(dim=-1)  # [B, L]
    assert effect[0, 3:].min() > 1e-3, "sample 0 head 1 lost keys 3-5 to sample 1's padding"
    assert effect[0, :3].max() < 1e-5 and effect[1, :3].max() < 1e-5, "the causal part is the same everywhere"


def test_batch_of_one_is_the_plain_causal_padding_mask() -> None:
    enc = _trunk(depth=2)
    x, pad = torch.randn(1, L, D), _padding([4])
    out = enc.forward_tokens(Tokens(x=x, padding_mask=pad), add_cls=False).x
    with torch.no_grad():
        ref = x
        for block in enc.blocks:
            ref = _manual_block(block, ref, _allowed(pad, scrambled=False))
    assert torch.allclose(out, ref, atol=1e-5)


def test_changing_token_30_leaves_earlier_positions_identical_in_legacy_mode() -> None:
    length = 40
    x = torch.randn(2, length, D)
    y = x.clone()
    y[:, 30] = 3.0 * torch.randn(2, D)  # a different token (a constant shift would vanish in the LayerNorm)
    pad = _padding([40, 36], length)
    for legacy in (True, False):
        enc = _trunk(depth=2, legacy=legacy)
        a = enc.forward_tokens(Tokens(x=x, padding_mask=pad), add_cls=False).x
        b = enc.forward_tokens(Tokens(x=y, padding_mask=pad), add_cls=False).x
        if legacy:
            assert torch.equal(a[:, :30], b[:, :30]), "legacy text attention is causal"
            assert (a[:, 30:36] - b[:, 30:36]).abs().amax() > 1e-4
        else:
            assert (a[:, :30] - b[:, :30]).abs().amax() > 1e-4, "the default attention is bidirectional"


def test_images_get_no_mask_and_the_default_path_is_unchanged() -> None:
    x = torch.randn(2, 5, D)
    legacy, default = _trunk(), _trunk()
    legacy.legacy, default.legacy = True, False
    assert torch.equal(legacy.forward_tokens(Tokens(x=x)).x, default.forward_tokens(Tokens(x=x)).x)
    pad = _padding([6, 6])  # no padding: the default path builds no mask at all, legacy stays causal
    out_default = default.forward_tokens(Tokens(x=torch.randn(2, L, D), padding_mask=pad), add_cls=False)
    assert out_default.x.shape == (2, L, D)
    with pytest.raises(ConfigError, match="final_norm"):
        UniversalEncoder({}, depth=1, embed_dim=D, num_heads=H, legacy=True, final_norm=True)


def test_attention_matches_nn_multihead_attention_with_the_repeated_mask() -> None:
    """The reference calls nn.MultiheadAttention(batch_first=True) with mask.repeat(H, 1, 1)."""
    enc = _trunk()
    block = enc.blocks[0]
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.attn.qkv.weight)  # [q; k; v] packed in both
        mha.in_proj_bias.copy_(block.attn.qkv.bias)
        mha.out_proj.weight.copy_(block.attn.proj.weight)
        mha.out_proj.bias.copy_(block.attn.proj.bias)
    x, pad = torch.randn(B, L, D), _padding(LENGTHS)
    real = (~pad).long()
    causal = (torch.arange(L)[None, :] <= torch.arange(L)[:, None]).long()
    extended = (1.0 - causal[None] * real[:, None, :]) * -10000.0  # [B, L, L] as the reference builds it
    h = block.norm1(x)
    with torch.no_grad():
        ref = mha(h, h, h, attn_mask=extended.repeat(H, 1, 1), need_weights=False)[0]
        ours = block.attn(h, attn_mask=legacy_text_attention_mask(pad, H))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_base_trunk_has_85_072_896_parameters() -> None:
    with torch.device("meta"):
        enc = UniversalEncoder({}, depth=12, embed_dim=768, num_heads=12, legacy=True)
    assert count_parameters(enc, "blocks.") == 85_072_896 == sum(p.numel() for p in enc.trunk_parameters().values())
    assert isinstance(enc.norm, torch.nn.Identity), "no final LayerNorm"
    assert enc.blocks[0].mlp.act.approximate == "none" and enc.blocks[0].norm1.eps == 1e-5  # F.gelu, LN 1e-5
