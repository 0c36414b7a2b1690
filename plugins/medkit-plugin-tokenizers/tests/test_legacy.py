"""Legacy mode of patch_2d / patch_3d / text_1d: the reference's tables and numerics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api import ConfigError, DataError
from medkit.testing import TokenizerContract, create
from medkit_plugin_tokenizers.text import TextTokenizer

WORDS = ["no", "acute", "process", ".", "small", "left", "pleural", "effusion", "##s", "lung", "clear", "heart"]


def _bert_vocab(path: Path) -> Path:
    """A BERT-layout vocab.txt: [PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103, words."""
    lines = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bert_vocab(tmp_path_factory.mktemp("bert") / "vocab.txt")


def _patch(name: str, embed_dim: int = 8, **kw: Any) -> Any:
    tok = create("tokenizer", name, embed_dim=embed_dim, legacy=True, **kw)
    with torch.no_grad():  # known tables: conv off, spatial row i = i, temporal row t = 1000 t
        tok.proj.weight.zero_()
        tok.proj.bias.zero_()
        rows = tok.pos.spatial.num_embeddings
        tok.pos.spatial.weight.copy_(torch.arange(rows, dtype=torch.float32)[:, None].expand(rows, embed_dim))
        tok.pos.temporal.weight.copy_(1000.0 * torch.arange(8, dtype=torch.float32)[:, None].expand(8, embed_dim))
    tok.norm = torch.nn.Identity()  # read the positions themselves
    return tok


class TestLegacyPatch2DContract(TokenizerContract):
    name = "patch_2d"

    def make_tokenizer(self) -> Any:
        return create("tokenizer", self.name, embed_dim=self.embed_dim, legacy=True, legacy_position_rows=64)

    def make_samples(self) -> list[dict[str, Any]]:
        return [{"input": torch.randn(3, 32, 48), "id": f"img{i}.png"} for i in range(2)]

    def make_bad_sample(self) -> dict[str, Any]:
        return {"input": torch.randn(3, 30, 32), "id": "bad.png"}


def test_legacy_defaults_are_the_reference_tables() -> None:
    t2 = create("tokenizer", "patch_2d", embed_dim=8, legacy=True)
    t3 = create("tokenizer", "patch_3d", embed_dim=8, legacy=True)
    assert tuple(t2.pos.spatial.weight.shape) == (1024, 8) and tuple(t3.pos.spatial.weight.shape) == (4096, 8)
    assert tuple(t2.pos.temporal.weight.shape) == tuple(t3.pos.temporal.weight.shape) == (8, 8)
    assert isinstance(t2.proj, torch.nn.Conv2d) and tuple(t2.proj.weight.shape) == (8, 3, 16, 16)
    assert isinstance(t3.proj, torch.nn.Conv3d) and tuple(t3.proj.weight.shape) == (8, 1, 16, 16, 16)
    assert not hasattr(t2, "pos_embed") and t2.base_grid == (14, 14) and t3.base_grid == (1, 12, 12)
    assert sorted(k for k in t2.state_dict()) == ["norm.bias", "norm.weight", "pos.spatial.weight",
                                                  "pos.temporal.weight", "proj.bias", "proj.weight"]
    default = create("tokenizer", "patch_2d", embed_dim=8)
    assert default.legacy is False and not hasattr(default, "pos") and hasattr(default, "pos_embed")


def test_2d_eval_uses_flat_rows_and_temporal_row_0() -> None:
    tok = _patch("patch_2d", legacy_position_rows=32).eval()
    for h, w in [(3, 4), (4, 3), (2, 8)]:  # every grid of 12 tokens reads rows 0..11: not grid-aware
        x = tok(torch.randn(2, 3, 16 * h, 16 * w)).x  # [B, N, D]
        expected = torch.arange(h * w, dtype=torch.float32)[None, :, None].expand(2, h * w, 8)
        assert torch.equal(x, expected), (h, w)
    x = tok(torch.randn(1, 3, 16 * 4, 16 * 8)).x  # 32 tokens: every row of the table, row-major (h, w)
    assert torch.equal(x[0, :, 0], torch.arange(32, dtype=torch.float32))
    with pytest.raises(DataError, match="legacy_position_rows"):
        tok(torch.randn(1, 3, 16 * 3, 16 * 11))  # 33 tokens > 32 rows


def test_3d_flat_rows_are_row_major_over_d_h_w() -> None:
    tok = _patch("patch_3d", legacy_position_rows=40).eval()
    x = tok(torch.randn(1, 1, 32, 48, 16)).x  # grid (2, 3, 1) → rows 0..5
    assert torch.equal(x[0, :, 3], torch.arange(6, dtype=torch.float32))


def test_train_draws_one_temporal_row_per_forward_from_the_global_rng() -> None:
    tok = _patch("patch_2d", legacy_position_rows=16).train()
    images = torch.randn(3, 3, 32, 32)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        want = int(torch.randint(0, 8, size=(1,), dtype=torch.long))  # the reference's exact call
        torch.manual_seed(seed)
        x = tok(images).x  # [3, 4, D]
        base = torch.arange(4, dtype=torch.float32)[None, :, None]
        assert torch.equal(x, (base + 1000.0 * want).expand(3, 4, 8)), seed  # one t for the whole batch
        seen.add(want)
    assert len(seen) >= 4 and seen <= set(range(8))


def test_legacy_forward_is_conv_plus_positions_then_layernorm() -> None:
    torch.manual_seed(0)
    tok = create("tokenizer", "patch_2d", embed_dim=16, legacy=True, legacy_position_rows=8).eval()
    images = torch.randn(2, 3, 32, 32)
    conv = torch.nn.functional.conv2d(images, tok.proj.weight, tok.proj.bias, stride=16).flatten(2).transpose(1, 2)
    pos = tok.pos.temporal.weight[0][None, None] + tok.pos.spatial.weight[:4][None]
    expected = torch.nn.functional.layer_norm(conv + pos, (16,), tok.norm.weight, tok.norm.bias, eps=1e-5)
    assert torch.allclose(tok(images).x, expected, atol=1e-6)


# -- text ------------------------------------------------------------------------------------------
def test_text_legacy_tables_and_known_answer(vocab: Path) -> None:
    torch.manual_seed(0)
    tok = TextTokenizer(embed_dim=16, vocab_file=str(vocab), max_length=12, legacy=True, legacy_vocab_rows=150,
                        legacy_position_rows=40).eval()
    assert tuple(tok.word_embed.weight.shape) == (150, 16) and tuple(tok.pos_embed.weight.shape) == (40, 16)
    assert tuple(tok.type_embed.weight.shape) == (2, 16)
    assert (tok.vocab_size, tok.num_pieces) == (150, 104 + len(WORDS))
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == \
        (0, 100, 101, 102, 103)
    assert tok.word_embed.weight.std() > 0.5, "legacy tables keep nn.Embedding's N(0, 1) init"
    parts = tok.collate([{"input": "No acute process.", "id": "a"}, {"input": "Small left effusions", "id": "b"}],
                        "report")
    ids, mask = parts["inputs"], parts["attention_mask"]
    assert tok.tokens(ids[1][:6]) == ["[CLS]", "small", "left", "effusion", "##s", "[SEP]"]
    out = tok(ids, mask)
    raw = tok.word_embed.weight[ids] + tok.pos_embed.weight[:12][None] + tok.type_embed.weight[0][None, None]
    expected = torch.nn.functional.layer_norm(raw, (16,), tok.norm.weight, tok.norm.bias, eps=1e-5)
    assert torch.allclose(out.x, expected, atol=1e-6)
    assert torch.equal(out.padding_mask, mask == 0)


def test_text_legacy_checks_and_round_trip(vocab: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="legacy_vocab_rows"):
        TextTokenizer(embed_dim=8, vocab_file=str(vocab), legacy=True, legacy_vocab_rows=50)
    with pytest.raises(ConfigError, match="max_length"):
        TextTokenizer(embed_dim=8, vocab_file=str(vocab), legacy=True, max_length=64, legacy_position_rows=32)
    tok = TextTokenizer(embed_dim=8, vocab_file=str(vocab), max_length=16, legacy=True, legacy_vocab_rows=130,
                        legacy_position_rows=20)
    again = TextTokenizer.from_pretrained(tok.save_pretrained(tmp_path / "tok"))
    assert (again.legacy, again.vocab_size, again.num_pieces) == (True, 130, tok.num_pieces)
    assert tuple(again.pos_embed.weight.shape) == (20, 8) and again.cls_token_id == 101
    default = TextTokenizer(embed_dim=8, vocab_file=str(vocab), max_length=16)
    assert not hasattr(default, "type_embed") and default.vocab_size == default.num_pieces == tok.num_pieces
    assert tuple(default.pos_embed.weight.shape) == (16, 8)


def test_text_legacy_defaults_are_the_reference_tables(vocab: Path) -> None:
    tok = create("tokenizer", "text_1d", embed_dim=4, vocab_file=str(vocab), legacy=True)
    assert tuple(tok.word_embed.weight.shape) == (49411, 4) and tuple(tok.pos_embed.weight.shape) == (512, 4)
    assert tok.max_length == 112 and tuple(tok.type_embed.weight.shape) == (2, 4)
    assert tok.special_mask.shape == tok.continuation_mask.shape == (49411,)
