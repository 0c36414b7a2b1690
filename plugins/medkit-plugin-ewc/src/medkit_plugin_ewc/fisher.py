"""The maths of EWC: the diagonal Fisher estimate, the quadratic penalty and the online update."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

#: One consolidated stage: (Fisher diagonal, anchor weights θ*), both keyed by parameter name.
Anchor = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


def diagonal_fisher(params: Mapping[str, torch.Tensor], batches: Iterable[Any],
                    loss_fn: Callable[[Any], torch.Tensor], *, reduce: bool = True) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher from minibatch gradients.

    ``F_i = (1/K) Σ_k (∂L_k/∂θ_i)²`` where ``L_k = loss_fn(batch_k)`` is the loss of minibatch ``k``
    (a mean over its samples, as a pretext loss is) and ``K`` the number of minibatches. Parameters the
    loss does not reach get ``F = 0``. The result is float32 and has no autograd history.

    Under ``torch.distributed`` each rank passes its own share of the minibatches; with ``reduce`` the
    sums of squares and the batch counts are all-reduced, so every rank gets the Fisher of all of them.

    Args:
        params: the parameters to estimate it for, by name.
        batches: the minibatches (anything ``loss_fn`` accepts).
        loss_fn: maps one minibatch to a scalar loss.
        reduce: all-reduce across ranks when a process group is initialised.
    """
    names = list(params)
    tensors = [params[n] for n in names]
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in tensors]
    count = 0
    for batch in batches:
        loss = loss_fn(batch)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for acc, g in zip(sums, grads):
            if g is not None:
                acc.add_(g.detach().float().pow(2))
        count += 1
    if reduce and torch.distributed.is_available() and torch.distributed.is_initialized():
        flat = torch.cat([s.reshape(-1) for s in sums] + [sums[0].new_tensor([float(count)])]) \
            if sums else torch.tensor([float(count)])
        torch.distributed.all_reduce(flat)
        count = int(round(float(flat[-1])))
        offset = 0
        for s in sums:
            s.copy_(flat[offset:offset + s.numel()].view_as(s))
            offset += s.numel()
    if count == 0:
        raise ValueError("diagonal_fisher: no minibatches were given")
    return {n: s / count for n, s in zip(names, sums)}


def ewc_penalty(params: Mapping[str, torch.Tensor], anchors: Sequence[Anchor]) -> torch.Tensor:
    """``Σ_anchors Σ_i F_i (θ_i − θ*_i)²`` — no factor ½ and no λ (the caller multiplies by λ).

    Parameters missing from an anchor are not penalised by it. Differentiable in ``params``.
    """
    total: torch.Tensor | None = None
    for fisher, theta_star in anchors:
        for name, f in fisher.items():
            p = params[name]
            term = (f * (p.float() - theta_star[name]).pow(2)).sum()
            total = term if total is None else total + term
    if total is None:
        first = next(iter(params.values()), None)
        return torch.zeros((), device=first.device if first is not None else "cpu")
    return total


def online_update(old: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor],
                  gamma: float) -> dict[str, torch.Tensor]:
    """Online EWC's running Fisher ``F ← γ·F_old + F_new`` (``F_new`` alone when there is no old)."""
    if old is None:
        return {n: f.clone() for n, f in new.items()}
    missing = sorted(set(new) ^ set(old))
    if missing:
        raise ValueError(f"online EWC: the stored Fisher and the new one cover different parameters "
                         f"(first: {missing[0]})")
    return {n: gamma * old[n] + new[n] for n in new}
