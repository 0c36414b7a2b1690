"""Intra-modal mixup of buffer batches: per-sample λ for images, token swap for text."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medkit.api import ConfigError

DISTRIBUTIONS = ("uniform", "beta")


def draw_ratios(n: int, dist: str = "uniform", alpha: float = 1.0, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` mixing ratios in [0, 1] on the CPU: U(0, 1) (MedCoSS) or Beta(α, α).

    Draws come from ``generator`` or, when it is ``None``, from the global CPU RNG (saved with
    every checkpoint, so a resumed run draws the same ratios).
    """
    if dist == "uniform":
        return torch.rand(n, generator=generator)
    if dist == "beta":
        if alpha <= 0:
            raise ConfigError(f"strategy rehearsal: mixup_alpha must be > 0 for a Beta(α, α) mixup, got {alpha}")
        beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
        if generator is None:
            return beta.sample((n,))
        seed = int(torch.randint(2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return beta.sample((n,))
    raise ConfigError(f"strategy rehearsal: mixup_dist must be one of {', '.join(DISTRIBUTIONS)}, got {dist!r}")


@dataclass
class ImageMix:
    """``x̃ = λ·x + (1 − λ)·x[perm]`` with one ``λ`` per sample."""

    inputs: torch.Tensor  # [B, C, *S]
    lam: torch.Tensor  # [B]
    perm: torch.Tensor  # [B]


@dataclass
class TokenMix:
    """Token-level mix: position ``(b, l)`` keeps sample ``b``'s token where ``keep`` is True,
    else takes sample ``perm[b]``'s token and attention bit; ``keep ~ Bernoulli(ratio)``."""

    ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor | None  # [B, L]
    ratio: float
    keep: torch.Tensor  # [B, L] bool
    perm: torch.Tensor  # [B]


def mix_images(x: torch.Tensor, *, dist: str = "uniform", alpha: float = 1.0,
               generator: torch.Generator | None = None) -> ImageMix:
    """Mix every image with a random partner of the same batch, one ratio per sample."""
    b = x.shape[0]
    perm = torch.randperm(b, generator=generator)
    lam = draw_ratios(b, dist, alpha, generator=generator)
    lam_x = lam.to(device=x.device, dtype=x.dtype).view(b, *([1] * (x.ndim - 1)))  # [B, 1, ...]
    mixed = lam_x * x + (1.0 - lam_x) * x[perm.to(x.device)]
    return ImageMix(inputs=mixed, lam=lam, perm=perm)


def mix_tokens(ids: torch.Tensor, attention_mask: torch.Tensor | None, *, dist: str = "uniform",
               alpha: float = 1.0, generator: torch.Generator | None = None) -> TokenMix:
    """Token CutMix of ``ids [B, L]``: one ratio ``r`` per batch, each token kept with probability
    ``r``, otherwise replaced by the permuted sample's token; attention masks are mixed alike."""
    b, length = ids.shape
    perm = torch.randperm(b, generator=generator)
    ratio = float(draw_ratios(1, dist, alpha, generator=generator)[0])
    keep = (torch.rand(b, length, generator=generator) < ratio).to(ids.device)  # Bernoulli(r)
    p = perm.to(ids.device)
    mixed = torch.where(keep, ids, ids[p])
    mask = None if attention_mask is None else torch.where(keep, attention_mask, attention_mask[p])
    return TokenMix(ids=mixed, attention_mask=mask, ratio=ratio, keep=keep, perm=perm)
