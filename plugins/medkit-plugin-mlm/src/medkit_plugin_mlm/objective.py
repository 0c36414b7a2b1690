"""The ``mlm`` objective: whole-word masked language modelling with a BERT-style head."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from medkit.api import Batch, ConfigError, DataError, LossOutput, UniversalEncoder

from medkit_plugin_mlm.masking import WordMasking, whole_word_mask

log = logging.getLogger(__name__)

#: What the objective needs from its tokenizer (``text_1d`` provides all of it).
TOKENIZER_NEEDS = ("vocab_size", "mask_token_id", "special_ids", "word_ids")


class MLMHead(nn.Module):
    """Linear D→D → GELU → LayerNorm(eps 1e-12) → Linear D→V (no bias) + a separate bias ``[V]``.

    Not weight-tied to the input embedding (as MedCoSS). Linears are xavier-uniform, biases zero.
    """

    def __init__(self, embed_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(embed_dim, eps=1e-12)
        self.decoder = nn.Linear(embed_dim, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        for m in (self.dense, self.decoder):
            nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(self.dense.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., V]`` of features ``[..., D]``."""
        return self.decoder(self.norm(self.act(self.dense(x)))) + self.bias


class MLMObjective(nn.Module):
    """Masked language modelling of word-piece batches (``text_1d``).

    Masking is drawn here, from the batch ids and ``generator``: whole words up to 15 % of each
    sample's real pieces, replaced 80/10/10 by ``[MASK]`` / a random non-special id / themselves.
    The encoder attends bidirectionally with the tokenizer's per-sample padding mask (the reference's
    causal, batch-scrambled mask is not reproduced). Cross-entropy is taken on
    the selected positions only.

    Args:
        encoder: the shared encoder (engine-supplied); only read here, never stored.
        tokenizer: name of the encoder's word-piece tokenizer (engine-supplied).
        mlm_probability: fraction of real word-pieces to predict per sample.
        mask_prob: share of selected pieces replaced by ``[MASK]``.
        random_prob: share replaced by a random non-special word-piece (the rest are kept).
    """

    random_ids: torch.Tensor  # a buffer registered in __init__

    def __init__(self, encoder: UniversalEncoder, tokenizer: str, mlm_probability: float = 0.15,
                 mask_prob: float = 0.8, random_prob: float = 0.1) -> None:
        super().__init__()
        if tokenizer not in encoder.tokenizers:
            raise ConfigError(f"objective mlm: the encoder has no tokenizer {tokenizer!r} (it has "
                              f"{', '.join(encoder.tokenizers) or 'none'})")
        tok: Any = encoder.tokenizers[tokenizer]
        missing = [a for a in TOKENIZER_NEEDS if not hasattr(tok, a)]
        if missing:
            raise ConfigError(f"objective mlm: tokenizer {tokenizer!r} lacks {', '.join(missing)}; mlm needs a "
                              f"word-piece tokenizer such as text_1d (set the modality's tokenizer)")
        if not 0.0 < mlm_probability < 1.0:
            raise ConfigError(f"objective mlm: mlm_probability must be in (0, 1), got {mlm_probability}")
        if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1.0:
            raise ConfigError(f"objective mlm: mask_prob ({mask_prob}) + random_prob ({random_prob}) must be "
                              f"within [0, 1]")
        self.tokenizer = tokenizer
        self.mlm_probability, self.mask_prob, self.random_prob = mlm_probability, mask_prob, random_prob
        self.vocab_size = int(tok.vocab_size)
        self.head = MLMHead(encoder.embed_dim, self.vocab_size)
        # random replacements come from the vocabulary's own pieces: a legacy table (49,411 rows for a
        # 28,996-piece vocabulary) has rows no token ever uses
        pieces = int(getattr(tok, "num_pieces", self.vocab_size))
        special = torch.zeros(pieces, dtype=torch.bool)
        special[[i for i in tok.special_ids if i < pieces]] = True
        self.register_buffer("random_ids", torch.nonzero(~special).flatten(), persistent=False)  # [K]

    def mask(self, encoder: UniversalEncoder, batch: Batch, *,
             generator: torch.Generator | None = None) -> WordMasking:
        """Draw the whole-word masking of ``batch`` (exposed so strategies can reuse it)."""
        tok: Any = encoder.tokenizers[self.tokenizer]
        ids = batch.inputs
        if ids.ndim != 2 or ids.is_floating_point():
            raise DataError(f"objective mlm, modality {batch.modality!r}: expected token ids [B, L], got a "
                            f"{ids.dtype} tensor of shape {list(ids.shape)}; use the text_1d tokenizer")
        words = tok.word_ids(ids)  # [B, L], -1 = special
        if batch.attention_mask is not None:
            words = words.masked_fill(batch.attention_mask == 0, -1)
        return whole_word_mask(ids, words, mask_token_id=int(tok.mask_token_id), random_ids=self.random_ids,
                               mlm_probability=self.mlm_probability, mask_prob=self.mask_prob,
                               random_prob=self.random_prob, generator=generator)

    def forward(self, encoder: UniversalEncoder, batch: Batch, *,
                generator: torch.Generator | None = None) -> LossOutput:
        masking = self.mask(encoder, batch, generator=generator)
        out = encoder(self.tokenizer, masking.inputs, batch.attention_mask)
        feats = out.patch_tokens  # [B, L, D] (text adds no prefix)
        selected = masking.selected  # [B, L]
        targets = masking.labels[selected]  # [M]
        if targets.numel() == 0:  # only empty texts: nothing to predict, keep the graph
            loss = feats.sum() * 0.0
            return LossOutput(loss, {"mlm": 0.0, "mlm_acc": 0.0})
        logits = self.head(feats[selected])  # [M, V]
        loss = F.cross_entropy(logits.float(), targets)
        acc = (logits.detach().argmax(dim=-1) == targets).float().mean()
        return LossOutput(loss, {"mlm": loss.detach(), "mlm_acc": acc})
