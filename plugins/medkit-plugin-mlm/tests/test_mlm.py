"""Whole-word masking known answers, the MLM head and loss, and bidirectional padded attention."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest
import torch
from torch import nn

from medkit.api import ConfigError, UniversalEncoder, collate
from medkit.testing import create, get_host
from medkit_plugin_mlm.masking import (
    IGNORE_INDEX,
    KEEP_UNMASKED,
    KEPT_ORIGINAL,
    REPLACED_MASK,
    REPLACED_RANDOM,
    whole_word_mask,
)
from medkit_plugin_mlm.objective import MLMHead, MLMObjective

if "text_1d" not in get_host().names("tokenizer"):  # pragma: no cover - depends on the environment
    pytest.skip("medkit-plugin-tokenizers (text_1d) is not installed", allow_module_level=True)

MASK = 4
WORDS = ["the", "lungs", "pleural", "pneumothorax", "heart", "is", "no", "small", "left", "cat", "tube", "normal"]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-written WordPiece vocabulary: some words whole, some in two pieces, others spelled out."""
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase,
              *[f"##{c}" for c in string.ascii_lowercase], "the", "is", "no", "heart", "lung", "pleur",
              "##al", "small", "left", "right", "pneum", "##othorax", "normal"]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(pieces) + "\n", encoding="utf-8")
    return path


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25))) for _ in range(n)]


def _tokenizer(vocab_file: Path | None = None, dim: int = 32, max_length: int = 112) -> nn.Module:
    return create("tokenizer", "text_1d", embed_dim=dim, vocab_file=None if vocab_file is None else str(vocab_file),
                  max_length=max_length)


def _model(vocab_file: Path | None = None, max_length: int = 112) -> tuple[UniversalEncoder, MLMObjective]:
    torch.manual_seed(0)
    tok = _tokenizer(vocab_file, max_length=max_length)
    encoder = UniversalEncoder({"text_1d": tok}, depth=2, embed_dim=32, num_heads=2)
    return encoder, create("objective", "mlm", encoder=encoder, tokenizer="text_1d")


def test_known_answer_only_the_fitting_word_is_masked() -> None:
    # [CLS] w0 w0 w1 w2 w2 w2 [SEP] [PAD] [PAD]: 6 real pieces → quota round(0.9) = 1 → only w1 fits
    ids = torch.tensor([[2, 40, 41, 50, 60, 61, 62, 3, 0, 0]])
    words = torch.tensor([[-1, 0, 0, 1, 2, 2, 2, -1, -1, -1]])
    for seed in range(5):
        m = whole_word_mask(ids, words, mask_token_id=MASK, random_ids=torch.arange(5, 70), mask_prob=1.0,
                            random_prob=0.0, generator=torch.Generator().manual_seed(seed))
        assert m.labels.tolist() == [[IGNORE_INDEX] * 3 + [50] + [IGNORE_INDEX] * 6]
        assert m.inputs.tolist() == [[2, 40, 41, MASK, 60, 61, 62, 3, 0, 0]]
        assert m.mode.tolist() == [[KEEP_UNMASKED] * 3 + [REPLACED_MASK] + [KEEP_UNMASKED] * 6]


def test_known_answer_oversized_word_is_still_masked_whole() -> None:
    # every word has 2 pieces but the quota is 1: one word is masked, whole
    ids = torch.tensor([[2, 40, 41, 50, 51, 3], [2, 3, 0, 0, 0, 0]])
    words = torch.tensor([[-1, 0, 0, 1, 1, -1], [-1, -1, -1, -1, -1, -1]])
    m = whole_word_mask(ids, words, mask_token_id=MASK, random_ids=torch.arange(5, 70),
                        generator=torch.Generator().manual_seed(0))
    sel = m.selected[0].tolist()
    assert sel in ([False, True, True, False, False, False], [False, False, False, True, True, False])
    assert not m.selected[1].any() and torch.equal(m.inputs[1], ids[1])  # no words: nothing masked


def _batch_masking(vocab_file: Path, n: int, seed: int, **kw: float):
    tok = _tokenizer(vocab_file)
    ids, att = tok.encode(_texts(n, seed))
    words = tok.word_ids(ids).masked_fill(att == 0, -1)
    special = torch.zeros(tok.vocab_size, dtype=torch.bool)
    special[list(tok.special_ids)] = True
    m = whole_word_mask(ids, words, mask_token_id=tok.mask_token_id, random_ids=torch.nonzero(~special).flatten(),
                        generator=torch.Generator().manual_seed(seed), **kw)
    return tok, ids, att, words, m


def test_masking_properties_over_many_samples(vocab_file: Path) -> None:
    tok, ids, att, words, m = _batch_masking(vocab_file, 400, seed=1)
    real = words >= 0
    assert (real.sum(1) > 0).all()
    ratio = m.selected.sum().item() / real.sum().item()
    assert 0.12 <= ratio <= 0.18, ratio
    assert not (m.selected & ~real).any(), "special tokens and padding are never selected"
    assert (m.selected.sum(1) >= 1).all(), "every sample with words gets at least one prediction"
    # whole words: per (sample, word), either none or all of its pieces are selected
    key = (torch.arange(ids.shape[0])[:, None] * ids.shape[1] + words)[real]
    pieces = torch.bincount(key, minlength=ids.numel())
    chosen = torch.bincount(key, weights=m.selected[real].double(), minlength=ids.numel()).long()
    assert ((chosen == 0) | (chosen == pieces)).all()
    assert (chosen[pieces > 1] == pieces[pieces > 1]).any(), "some multi-piece word is masked whole"
    assert (tok.word_ids(ids)[real] >= 0).all()
    # multi-piece words exist, so the whole-word rule is really exercised
    assert (torch.bincount(words[0][real[0]]) > 1).any()


def test_80_10_10_with_a_fixed_generator(vocab_file: Path) -> None:
    tok, ids, att, words, m = _batch_masking(vocab_file, 2000, seed=2)
    sel = m.selected
    total = sel.sum().item()
    share = {k: ((m.mode == k) & sel).sum().item() / total for k in (REPLACED_MASK, REPLACED_RANDOM, KEPT_ORIGINAL)}
    assert total > 3000
    assert abs(share[REPLACED_MASK] - 0.8) < 0.03 and abs(share[REPLACED_RANDOM] - 0.1) < 0.02
    assert abs(share[KEPT_ORIGINAL] - 0.1) < 0.02
    assert (m.inputs[m.mode == REPLACED_MASK] == tok.mask_token_id).all()
    randoms = m.inputs[m.mode == REPLACED_RANDOM]
    assert not torch.isin(randoms, torch.tensor(tok.special_ids)).any()
    assert torch.equal(m.inputs[(m.mode == KEPT_ORIGINAL) | ~sel], ids[(m.mode == KEPT_ORIGINAL) | ~sel])
    assert torch.equal(m.labels[sel], ids[sel]) and (m.labels[~sel] == IGNORE_INDEX).all()
    again = _batch_masking(vocab_file, 2000, seed=2)[-1]
    assert torch.equal(again.inputs, m.inputs) and torch.equal(again.labels, m.labels)


def test_attention_is_bidirectional_with_per_sample_padding() -> None:
    encoder, _ = _model()
    encoder.eval()
    tok = encoder.tokenizers["text_1d"]
    long_text = " ".join(WORDS * 4)
    a = tok.collate([{"input": long_text, "id": "0"}, {"input": "no effusion", "id": "1"}], "report")
    b = tok.collate([{"input": long_text, "id": "0"}, {"input": " ".join(WORDS * 2), "id": "1"}], "report")
    assert not torch.equal(a["attention_mask"][1], b["attention_mask"][1])
    with torch.no_grad():
        xa = encoder("text_1d", a["inputs"], a["attention_mask"]).x
        xb = encoder("text_1d", b["inputs"], b["attention_mask"]).x
        assert torch.allclose(xa[0], xb[0], atol=1e-5), "sample 1's padding must not change sample 0"
        # ids under sample 1's padding are ignored
        garbage = a["inputs"].clone()
        pad = a["attention_mask"][1] == 0
        garbage[1, pad] = 7
        xg = encoder("text_1d", garbage, a["attention_mask"]).x
        assert torch.allclose(xg[1, ~pad], xa[1, ~pad], atol=1e-5)
        # not causal: changing token 30 changes the features before it
        changed = a["inputs"].clone()
        assert a["attention_mask"][0, 31] == 1
        changed[0, 30] = tok.mask_token_id if changed[0, 30] != tok.mask_token_id else 5
        xc = encoder("text_1d", changed, a["attention_mask"]).x
        assert (xc[0, :30] - xa[0, :30]).abs().amax(dim=-1).min() > 1e-6


def test_head_layout_and_untied_weights() -> None:
    encoder, objective = _model()
    head = objective.head
    assert isinstance(head, MLMHead) and head.dense.weight.shape == (32, 32)
    assert isinstance(head.act, nn.GELU) and head.norm.eps == 1e-12
    assert head.decoder.bias is None and head.bias.shape == (encoder.tokenizers["text_1d"].vocab_size,)
    assert head.decoder.weight.data_ptr() != encoder.tokenizers["text_1d"].word_embed.weight.data_ptr()
    assert not any(n.startswith(("encoder", "blocks")) for n, _ in objective.named_parameters())


def test_loss_is_cross_entropy_on_masked_positions_only(vocab_file: Path) -> None:
    encoder, objective = _model(vocab_file)
    encoder.eval()
    tok = encoder.tokenizers["text_1d"]
    batch = collate([{"input": t, "id": str(k)} for k, t in enumerate(_texts(6, seed=3))], "report", tok)
    out = objective(encoder, batch, generator=torch.Generator().manual_seed(9))
    m = objective.mask(encoder, batch, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        feats = encoder("text_1d", m.inputs, batch.attention_mask).x
        logits = objective.head(feats)  # [B, L, V]
        expected = nn.functional.cross_entropy(logits.flatten(0, 1), m.labels.flatten(), ignore_index=IGNORE_INDEX)
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert set(out.metrics) == {"mlm", "mlm_acc"} and 0.0 <= out.metrics["mlm_acc"] <= 1.0


def test_a_few_steps_reduce_the_loss(vocab_file: Path) -> None:
    encoder, objective = _model(vocab_file, max_length=48)
    tok = encoder.tokenizers["text_1d"]
    batch = collate([{"input": t, "id": str(k)} for k, t in enumerate(_texts(4, seed=4))], "report", tok)
    opt = torch.optim.AdamW(list(encoder.parameters()) + list(objective.parameters()), lr=3e-3)
    losses = []
    for _ in range(15):
        out = objective(encoder, batch, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_config_errors() -> None:
    class Plain(nn.Module):
        adds_cls = False

    encoder = UniversalEncoder({"plain": Plain()}, depth=1, embed_dim=32, num_heads=2)
    with pytest.raises(ConfigError, match="word-piece tokenizer"):
        MLMObjective(encoder, "plain")
    with pytest.raises(ConfigError, match="no tokenizer 'text_1d'"):
        MLMObjective(encoder, "text_1d")
    text_encoder, _ = _model()
    with pytest.raises(ConfigError, match="mlm_probability"):
        MLMObjective(text_encoder, "text_1d", mlm_probability=0.0)


def test_factory_config_builds() -> None:
    hydra_zen = pytest.importorskip("hydra_zen")
    encoder, _ = _model()
    cfg = hydra_zen.builds(MLMObjective, populate_full_signature=True, zen_exclude=("encoder", "tokenizer"))
    objective = hydra_zen.instantiate(cfg, encoder=encoder, tokenizer="text_1d", mlm_probability=0.3)
    assert objective.mlm_probability == 0.3 and objective.tokenizer == "text_1d"
    tok = encoder.tokenizers["text_1d"]
    batch = collate([{"input": t, "id": str(k)} for k, t in enumerate(_texts(3, seed=5))], "report", tok)
    assert torch.isfinite(objective(encoder, batch).loss)  # generator=None draws from the global RNG
