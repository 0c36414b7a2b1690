"""Pooled encoder features of dataset samples (``medkit embed`` and the modality-separability measure)."""

from __future__ import annotations

from typing import Any, Sequence

import torch


@torch.no_grad()
def pooled_features(encoder: Any, modality: str, tokenizer: str, dataset: Any, indices: Sequence[int],
                    batch_size: int = 16) -> torch.Tensor:
    """Eval-mode pooled features ``[N, D]`` (mean over non-padding patch tokens) of ``dataset``
    samples ``indices``, loaded without augmentation."""
    from medkit.api.batch import collate

    tok = encoder.tokenizers[tokenizer]
    out = []
    for k in range(0, len(indices), batch_size):
        batch = collate([dataset.load(int(i), seed=None) for i in indices[k:k + batch_size]], modality, tok)
        out.append(encoder(tokenizer, batch.inputs, batch.attention_mask).pooled().float())
    return torch.cat(out)
