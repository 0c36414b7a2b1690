"""Per-sample random streams: training randomness keyed by a sample's place in the global batch.

Inside :func:`sample_streams` (the engine opens it around every training forward), draws made
through :func:`per_sample_rand` come from one generator per sample, seeded by the sample's key —
``(run seed, stage, step, index in the global batch)`` — and the number of draws made so far in the
step. Every rank runs the same code on its share of the batch, so the ``k``-th draw of a sample is
the same number whether one process trains the whole global batch or several processes split it:
a run's result does not depend on how many processes ran it (masking noise, drop path, mixup…).
Outside the context (evaluation, tests, a plugin's own code) the usual global RNG is used.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

_STREAMS: ContextVar[list[int] | None] = ContextVar("medkit_sample_streams", default=None)
_DRAWS: ContextVar[list[int]] = ContextVar("medkit_sample_draws", default=[0])  # noqa: B039 - only mutated after a set()
T = TypeVar("T")


def sample_key(*parts: int) -> int:
    """A 63-bit seed from integers (sha1, the same on every machine and process)."""
    return int(hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


@contextmanager
def sample_streams(seeds: Sequence[int] | None) -> Iterator[None]:
    """Draw per-sample randomness from ``seeds`` (one per sample of the batch) inside the block."""
    token = _STREAMS.set(list(seeds) if seeds is not None else None)
    draws = _DRAWS.set([0])
    try:
        yield
    finally:
        _STREAMS.reset(token)
        _DRAWS.reset(draws)


def active(batch: int) -> bool:
    """Whether per-sample streams are open for a batch of ``batch`` samples."""
    seeds = _STREAMS.get()
    return seeds is not None and len(seeds) == batch


def per_sample_rand(batch: int, *shape: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Uniform ``[batch, *shape]`` drawn per sample from its own stream, or ``None`` when no
    stream is open for this batch size (the caller then uses its usual generator)."""
    seeds = _STREAMS.get()
    if seeds is None or len(seeds) != batch:
        return None
    counter = _DRAWS.get()
    k = counter[0]
    counter[0] += 1
    rows = [torch.rand(shape, generator=torch.Generator().manual_seed(sample_key(s, k))) for s in seeds]
    return torch.stack(rows).to(device)


def replayable(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` bound to the per-sample streams as they stand now: every call of the result makes the
    draws a direct call of ``fn`` would make here, and a call advances the open streams past them.

    Activation checkpointing (``trainer.grad_checkpointing``) runs a block's forward again in the
    backward pass, outside :func:`sample_streams`: wrapped this way, the recomputation draws the very
    drop-path numbers of the forward, so the gradients are those of an ordinary backward. Outside
    any stream ``fn`` itself is returned (the global RNG, which ``torch.utils.checkpoint`` restores).
    """
    seeds = _STREAMS.get()
    if seeds is None:
        return fn
    outer = _DRAWS.get()
    start = outer[0]

    def run(*args: Any, **kwargs: Any) -> T:
        counter = [start]
        s_token, d_token = _STREAMS.set(seeds), _DRAWS.set(counter)
        try:
            return fn(*args, **kwargs)
        finally:
            _STREAMS.reset(s_token)
            _DRAWS.reset(d_token)
            outer[0] = max(outer[0], counter[0])  # the forward moves on; a late recompute changes nothing

    return run
