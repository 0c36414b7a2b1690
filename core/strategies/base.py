"""The strategy base class: the reference implementation of :class:`medkit.api.protocols.Strategy`, every
strategy point as a no-op."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Sequence

import torch

from medkit.api.context import LossOutput, RunContext
from medkit.api.batch import Batch, Source


class BaseStrategy:
    """Every method of the strategy interface (:class:`medkit.api.protocols.Strategy`) as a no-op: one
    stage per modality, pretext loss on its own data.

    Subclasses override what they need. State returned by :meth:`state_dict` is saved as
    safetensors (tensors) + JSON (``meta``) in the run directory and restored on resume/--from.
    """

    name = "base"
    #: Whether the encoder is pre-trained at all (``tfs`` sets False).
    trains = True
    #: The least share of a stage's steps on its own data when buffers are interleaved.
    min_current_fraction = 0.5

    def plan(self, modalities: Sequence[str]) -> list[list[str]]:
        return [[m] for m in modalities]

    def setup(self, ctx: RunContext) -> None:
        return None

    def before_stage(self, ctx: RunContext) -> None:
        return None

    def sources(self, ctx: RunContext) -> list[Source]:
        return [Source(m, list(ctx.train_indices[m])) for m in ctx.stage]

    def loss(self, ctx: RunContext, batch: Batch) -> LossOutput:
        return ctx.pretext_loss(batch)

    def after_backward(self, ctx: RunContext) -> None:
        return None

    def after_optimizer_step(self, ctx: RunContext) -> None:
        return None

    def after_stage(self, ctx: RunContext) -> None:
        return None

    def eval_context(self, ctx: RunContext, modality: str) -> AbstractContextManager[Any]:
        return nullcontext()

    def parameters_groups(self, ctx: RunContext) -> list[dict[str, Any]]:
        return []

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        return None


if TYPE_CHECKING:  # the type checker proves the base class implements the one strategy interface
    from medkit.api.protocols import Strategy

    _implements: type[Strategy] = BaseStrategy
