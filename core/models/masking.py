"""Per-sample random token masking shared by MAE, distillation and every strategy that needs it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medkit.api.randomness import per_sample_rand


@dataclass
class Masking:
    """Which tokens are kept. ``noise`` is kept so a teacher can reuse the exact same mask."""

    noise: torch.Tensor  # [B, N]
    ids_keep: torch.Tensor  # [B, n_keep]
    ids_restore: torch.Tensor  # [B, N]
    mask: torch.Tensor  # [B, N] 1 = masked (removed), 0 = kept


def make_noise(batch: int, num_tokens: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise ``[B, N]`` whose argsort defines the per-sample shuffle: from ``generator``,
    else from each sample's own stream in training (:mod:`medkit.api.randomness`), else the global RNG."""
    if generator is None:
        own = per_sample_rand(batch, num_tokens, device=device)
        if own is not None:
            return own
    return torch.rand(batch, num_tokens, generator=generator,
                      device=generator.device if generator is not None else device).to(device)


def random_masking(noise: torch.Tensor, mask_ratio: float) -> Masking:
    """Keep the ``int(N * (1 - mask_ratio))`` tokens with the smallest noise (MAE's rule).

    Args:
        noise: ``[B, N]`` uniform noise, from :func:`make_noise`.
        mask_ratio: fraction removed, in ``[0, 1)``.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    batch, num_tokens = noise.shape
    n_keep = int(num_tokens * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :n_keep]
    mask = torch.ones(batch, num_tokens, device=noise.device)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(noise=noise, ids_keep=ids_keep, ids_restore=ids_restore, mask=mask)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``x[b, ids[b]]`` for ``x [B, N, D]`` and ``ids [B, n]``."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
