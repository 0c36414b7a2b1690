"""Pooled features kept between two readers of the same weights (the rehearsal buffer, then the probes)."""

from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

_CACHES: weakref.WeakSet[FeatureCache] = weakref.WeakSet()
_HOOKED = False


def _after_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    for cache in list(_CACHES):
        cache.after_optimizer_step(optimizer)


def _hook_optimizers() -> None:
    """One process-wide optimizer post-step hook (registered once, never removed: it iterates a
    weak set of the live caches, so a dead cache costs nothing and no hook is removed mid-step)."""
    global _HOOKED
    if not _HOOKED:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(_after_optimizer_step)
        _HOOKED = True


class FeatureCache:
    """Rows of :meth:`medkit.api.context.RunContext.features` (eval mode, un-augmented input, mask
    ratio 0, the student encoder) kept for the samples a later call is known to ask for again.

    The engine says which samples will be asked again (:meth:`want`, before the strategy's
    ``after_stage``: the probes' training subsets), the rehearsal buffer's pass over the training
    set computes them, and the probes reuse them. A kept row is only ever returned for the weights
    it was computed with; the weights' version is

    * a counter bumped by every optimizer step over an encoder parameter (any optimizer: the
      engine's, a strategy's own fine-tuning, fused or not) and by :meth:`invalidate`, and
    * every encoder parameter's and buffer's identity and in-place version counter (a mask put in
      place or a ``load_state_dict`` changes it),

    and a change of either drops every kept row. Writes through ``tensor.data`` bypass both: code
    that changes weights that way must call :meth:`invalidate`.

    Args:
        encoder: the run's (student) encoder.
    """

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder
        self.wanted: dict[str, set[int]] = {}
        self.computed: dict[str, int] = {}  #: samples encoded, by modality (for the record and tests)
        self.reused: dict[str, int] = {}  #: samples served from kept rows, by modality
        self._rows: dict[str, dict[int, torch.Tensor]] = {}
        self._epoch = 0
        self._key: tuple[Any, ...] | None = None
        self._params: set[int] = set()
        _CACHES.add(self)
        _hook_optimizers()

    # -- what is kept ------------------------------------------------------------------------
    def want(self, modality: str, indices: Iterable[int]) -> None:
        """Keep the rows of ``indices`` of ``modality`` when a call computes them."""
        self.wanted.setdefault(modality, set()).update(int(i) for i in indices)

    def invalidate(self) -> None:
        """Drop every kept row (the weights changed, or a new stage starts)."""
        self._epoch += 1
        self._rows.clear()
        self._key = None

    def clear(self) -> None:
        """Drop every kept row and forget what was wanted."""
        self.invalidate()
        self.wanted.clear()

    def after_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after every optimizer step of the process: one over the encoder's parameters
        changes the weights."""
        if not self._params:
            self._params = {id(p) for p in self.encoder.parameters()}
        if any(id(p) in self._params for group in optimizer.param_groups for p in group["params"]):
            self.invalidate()

    def _version(self) -> tuple[Any, ...]:
        tensors = [*self.encoder.parameters(), *self.encoder.buffers()]
        return (self._epoch, tuple((id(t), t._version) for t in tensors))

    # -- the one entry point -------------------------------------------------------------------
    def features(self, modality: str, indices: Sequence[int],
                 compute: Callable[[Sequence[int]], torch.Tensor]) -> torch.Tensor:
        """``compute(indices)`` (``[N, D]``), with the rows already kept for the current weights
        taken from the cache: only the other samples are computed (in the order asked). When
        nothing is kept, this is exactly ``compute(indices)``."""
        indices = [int(i) for i in indices]
        key = self._version()
        if key != self._key:
            self._rows.clear()
            self._params = set()
            self._key = key
        kept = self._rows.get(modality, {})
        missing = list(dict.fromkeys(i for i in indices if i not in kept))
        if len(missing) == len(indices):
            out = compute(indices)
            fresh = dict(zip(indices, out))
        else:
            fresh = dict(zip(missing, compute(missing))) if missing else {}
            rows = [kept[i] if i in kept else fresh[i] for i in indices]
            out = torch.stack(rows) if rows else compute(indices)
        served = sum(1 for i in indices if i in kept)
        self.computed[modality] = self.computed.get(modality, 0) + len(indices) - served
        self.reused[modality] = self.reused.get(modality, 0) + served
        wanted = self.wanted.get(modality)
        if wanted and self._version() == key:  # computing changed no weight: the rows are current
            store = self._rows.setdefault(modality, {})
            for i, row in fresh.items():
                if i in wanted:
                    store[i] = row.clone()
        return out
