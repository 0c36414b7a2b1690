"""The reference MedCoSS numerics behind ``encoder.legacy``.

Only the official weights need these: a converted checkpoint (``medkit convert medcoss``) gives the
official model's features when its encoder and tokenizers run in legacy mode. The corrected model
(grid-aware positions, bidirectional text attention with a per-sample padding mask) is the default.
"""

from __future__ import annotations

import torch
from torch import nn

from medkit.api.errors import ConfigError, DataError

#: Additive score of a masked key, as the reference's ``(1 - m) * -10000``.
MASK_VALUE = -10000.0
#: Rows of the temporal table of the reference's ``Divide_ST_POS`` (Uni-Perceiver ``MAX_FRAMES``).
TEMPORAL_ROWS = 8


def legacy_text_attention_mask(padding_mask: torch.Tensor, num_heads: int,
                               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The reference text attention mask, batch-scrambled layout included: ``[B, H, L, L]`` additive.

    The reference builds ``m[b, i, j] = (j <= i) * real[b, j]`` (causal AND padding),
    turns it into ``(1 - m) * -10000`` of shape ``[B, L, L]``, and hands
    ``mask.repeat(H, 1, 1)`` (``[B·H, L, L]``) to ``nn.MultiheadAttention``, which reads row
    ``b·H + h`` for head ``h`` of sample ``b``. Row ``n`` of the repeat is sample ``n mod B``, so
    head ``h`` of sample ``b`` gets the padding of sample ``(b·H + h) mod B``. Viewing
    the repeat as ``[B, H, L, L]`` reproduces exactly that. With ``B = 1`` (or the same padding in
    every sample) it is the plain causal + padding mask.

    Args:
        padding_mask: ``[B, L]`` bool, True = padding.
        num_heads: attention heads ``H`` of the trunk.
        dtype: dtype of the additive mask (the attention scores' dtype).
    """
    batch, length = padding_mask.shape
    real = (~padding_mask.bool()).to(dtype)  # [B, L], 1 = a real token
    seq = torch.arange(length, device=padding_mask.device)
    causal = (seq[None, :] <= seq[:, None]).to(dtype)  # [L, L], query i sees keys j <= i
    keep = causal[None] * real[:, None, :]  # [B, L, L]
    additive = (1.0 - keep) * MASK_VALUE  # 0 where attended, -10000 where masked
    return additive.repeat(num_heads, 1, 1).view(batch, num_heads, length, length)  # [B, H, L, L]


def padding_source(sample: int, head: int, *, batch: int, num_heads: int) -> int:
    """The sample whose padding head ``head`` of ``sample`` sees in legacy mode: ``(b·H + h) mod B``."""
    return (sample * num_heads + head) % batch


class FlatPositions(nn.Module):
    """The reference ``Divide_ST_POS`` table: ``spatial[i] + temporal[t]``.

    ``i`` is the flattened row-major patch index ``0..N-1`` (not grid-aware: a 32×32 grid reuses
    rows of a 14×14 one for other places). ``t`` is drawn once per forward for the
    whole batch from the global torch RNG, uniform in ``[0, 7]``, in ``train()`` mode — with the
    reference's exact call, so the same seed gives the same ``t`` — and is 0 in ``eval()`` mode.
    Both tables keep PyTorch's ``nn.Embedding`` N(0, 1) init, as the reference.

    Args:
        rows: rows of the spatial table (``(512/16)²`` = 1024 in 2D, ``(256/16)³`` = 4096 in 3D).
        embed_dim: trunk width ``D``.
        name: the owning tokenizer, for error messages.
    """

    def __init__(self, rows: int, embed_dim: int, *, name: str) -> None:
        super().__init__()
        if int(rows) <= 0:
            raise ConfigError(f"tokenizer {name}: legacy_position_rows must be positive, got {rows}; "
                              f"set tokenizer.{name}.legacy_position_rows")
        self.name = name
        self.spatial = nn.Embedding(int(rows), int(embed_dim))  # [R, D]
        self.temporal = nn.Embedding(TEMPORAL_ROWS, int(embed_dim))  # [8, D]

    @property
    def rows(self) -> int:
        return int(self.spatial.num_embeddings)

    def temporal_index(self, device: torch.device) -> torch.Tensor:
        """``[1]`` long: random in ``[0, 7]`` in training (global RNG), 0 otherwise."""
        if self.training:
            return torch.randint(0, TEMPORAL_ROWS, size=(1,), dtype=torch.long, device=device)
        return torch.zeros(1, dtype=torch.long, device=device)

    def forward(self, num_tokens: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Positions of ``num_tokens`` tokens, ``[1, N, D]``."""
        if num_tokens > self.rows:
            raise DataError(f"tokenizer {self.name} (legacy): the input gives {num_tokens} tokens but the flat "
                            f"position table has {self.rows} rows; use smaller inputs or "
                            f"raise tokenizer.{self.name}.legacy_position_rows")
        temporal = self.temporal(self.temporal_index(device)).unsqueeze(1).to(dtype)  # [1, 1, D]
        index = torch.arange(num_tokens, dtype=torch.long, device=device)
        spatial = self.spatial(index).unsqueeze(0).to(dtype)  # [1, N, D]
        return temporal + spatial  # [1, N, D], the reference's order of the sum

    def extra_repr(self) -> str:
        return f"rows={self.rows}, temporal_rows={TEMPORAL_ROWS}"
