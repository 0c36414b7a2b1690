"""The refitted-decoder pretext loss: a fresh pretext head trained on the frozen encoder, then scored.

The pretext loss of an earlier modality, measured with that modality's own head as the run left it,
mixes two things: what the encoder still represents, and how well a decoder trained against an older
encoder reads the new one. A continual run that changes the encoder's features without losing
information (a rotation, a sign flip) raises that *stale-decoder* loss although nothing is forgotten.
:func:`refit_loss` removes the second part: it builds a **fresh** head of the modality's objective
(seeded initialisation), trains only the head for a fixed budget on the modality's training split with
the encoder frozen in ``eval()`` mode, and returns the held-out pretext loss with that head, measured
exactly as the stale-decoder loss is (same held-out samples, same masking seed). An encoder that keeps
the information a decoder needs scores the same whatever happened to its coordinates.

Hand-written: a fixed-budget head refit on a frozen encoder is what this metric is; no library
evaluates a masked-modelling decoder this way.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Callable, Sequence

import torch
from torch import nn

from medkit.api.context import RunContext

log = logging.getLogger(__name__)

#: builds a fresh pretext head of a modality for the run's encoder
HeadFactory = Callable[[str], nn.Module]


def _key(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def _order(indices: Sequence[int], steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """``steps`` minibatches walking seeded permutations of ``indices`` (a new one per pass)."""
    out: list[list[int]] = []
    pool: list[int] = []
    cursor, epoch = 0, 0
    while len(out) < steps:
        batch: list[int] = []
        while len(batch) < batch_size:
            if cursor == len(pool):
                perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(_key(seed, epoch)))
                pool, cursor = [indices[int(j)] for j in perm], 0
                epoch += 1
            take = min(batch_size - len(batch), len(pool) - cursor)
            batch += pool[cursor:cursor + take]
            cursor += take
        out.append(batch)
    return out


def fresh_head(make_head: HeadFactory, modality: str, seed: int, device: torch.device) -> nn.Module:
    """A new head of ``modality``'s objective, its initialisation a function of ``seed`` and the
    modality alone (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_key("refit-init", seed, modality))
        head = make_head(modality)
    return head.to(device)


def refit_loss(ctx: RunContext, modality: str, make_head: HeadFactory, *, steps: int, lr: float,
               max_batches: int, score: Callable[[RunContext, str, nn.Module, int], float]) -> float:
    """Held-out pretext loss of ``modality`` through a fresh head fitted for ``steps`` AdamW steps
    (learning rate ``lr``, the run's batch size, un-augmented training samples in a seeded order, a
    seeded masking draw per step) on the frozen ``eval()`` encoder; ``score`` measures it on the
    held-out split as the stale-decoder loss is measured. NaN without training or held-out samples.

    The encoder's parameters and mode are restored afterwards, and the global RNG is untouched, so
    the run continues exactly as it would have without this metric.
    """
    train = list(ctx.train_indices.get(modality, ()))
    if steps <= 0 or not train or not ctx.val_indices.get(modality):
        return float("nan")
    head = fresh_head(make_head, modality, ctx.seed, ctx.device)
    params = [p for p in head.parameters() if p.requires_grad]
    enc = ctx.encoder
    was_training = enc.training
    frozen = [(p, p.requires_grad) for p in enc.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    enc.eval()
    head.train()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            for k, indices in enumerate(_order(train, steps, ctx.batch_size, _key("refit-order", ctx.seed,
                                                                                    ctx.stage_index, modality))):
                batch = ctx.load_batch(modality, indices, train=False)
                gen = torch.Generator().manual_seed(_key("refit-mask", ctx.seed, modality, k))
                torch.manual_seed(_key("refit-step", ctx.seed, modality, k))  # anything else the head draws
                loss = head(enc, batch, generator=gen).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        head.eval()
        return float(score(ctx, modality, head, max_batches))
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        enc.train(was_training)
