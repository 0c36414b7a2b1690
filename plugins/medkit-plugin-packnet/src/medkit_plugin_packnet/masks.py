"""PackNet's weight ownership maps: magnitude pruning, the default ratio schedule, eval masks."""

from __future__ import annotations

import math

import torch

#: Owner value of a weight no stage owns yet (stage ``k``, 0-based, owns the value ``k + 1``).
FREE = 0
MAX_STAGES = 255  # owners are uint8


def default_ratios(num_stages: int) -> list[float]:
    """Equal shares: stage ``k`` of ``K`` prunes ``1 − 1/(K − k)`` of the weights still free, so each
    stage ends up owning ``1/K`` of every layer and the last stage keeps everything left (ratio 0)."""
    return [1.0 - 1.0 / (num_stages - k) for k in range(num_stages)]


def assign_owners(weight: torch.Tensor, owner: torch.Tensor, stage: int, prune_ratio: float) -> torch.Tensor:
    """Give stage ``stage`` (0-based) the largest-magnitude free weights of one layer.

    Among the weights with ``owner == FREE``, ``floor(prune_ratio · n_free)`` are pruned (stay free)
    and the other ``n_free − floor(prune_ratio · n_free)`` — those with the largest ``|w|``, ties broken
    by position — become owned by ``stage`` (value ``stage + 1``). Returns the new owner map; neither
    input is modified.
    """
    if not 0.0 <= prune_ratio < 1.0:
        raise ValueError(f"prune_ratio must be in [0, 1), got {prune_ratio}")
    if stage + 1 > MAX_STAGES:
        raise ValueError(f"packnet supports at most {MAX_STAGES} stages")
    flat_owner = owner.reshape(-1)
    free = (flat_owner == FREE).nonzero().squeeze(1)  # [n_free], ascending positions
    n_keep = free.numel() - math.floor(prune_ratio * free.numel())
    magnitude = weight.detach().reshape(-1)[free].abs().float()
    order = torch.argsort(magnitude, descending=True, stable=True)
    out = flat_owner.clone()
    out[free[order[:n_keep]]] = stage + 1
    return out.view_as(owner)


def eval_keep(owner: torch.Tensor, stage: int, *, pruned: bool = True) -> torch.Tensor:
    """Weights a modality of stage ``stage`` uses: owned by stages ``0..stage`` (plus the free ones
    when that stage is not pruned yet, i.e. mid-stage, where they are being trained)."""
    keep = (owner >= 1) & (owner <= stage + 1)
    if not pruned:
        keep |= owner == FREE
    return keep
