"""Runs under ``torchrun``: joining the process group and wrapping a step's loss in torch's
``DistributedDataParallel`` (bucketed gradient all-reduce overlapped with backward)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from medkit.api.batch import Batch
from medkit.api.collectives import barrier  # noqa: F401  (re-exported for the engine)
from medkit.api.context import LossOutput


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_world(device: str = "auto") -> World:
    """Join the process group torchrun describes in the environment (a no-op without one)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return World()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group("nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(local)
    return World(rank=rank, world_size=world_size, local_rank=local)


def broadcast_parameters(params: Sequence[torch.Tensor]) -> None:
    """Make every rank start from rank 0's weights."""
    if dist.is_initialized():
        for p in params:
            dist.broadcast(p.data, src=0)


class LossModule(nn.Module):
    """The module DDP wraps: it owns every parameter a step trains (encoder, heads and a strategy's
    extra parameters, e.g. CaSSLe's predictor) and its forward runs the step's loss function, so
    DDP sees the whole graph whatever the strategy computes (distillation, penalties, mixup)."""

    def __init__(self, model: nn.Module, extra: Sequence[nn.Parameter] = ()) -> None:
        super().__init__()
        self.model = model
        self.extra = nn.ParameterList(list(extra))
        self._fn: Callable[[Batch], LossOutput] | None = None

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        assert self._fn is not None
        out = self._fn(batch)
        return out.loss, out.metrics


class DataParallelStep:
    """``forward`` and ``no_sync`` for :class:`medkit.engine.step.TrainStep` in a distributed run.

    Modality-specific parameters (other modalities' tokenizers and heads) get no gradient on a
    step: every rank trains on the same modality at a given step (the step plan is global), so
    ``find_unused_parameters`` marks the same parameters unused on every rank and their ``grad``
    stays ``None`` exactly as in one process. Parameters frozen when the stage starts (PackNet,
    teachers) are not part of DDP; it is rebuilt each stage.
    """

    def __init__(self, model: nn.Module, extra: Sequence[nn.Parameter] = (), *, device: torch.device) -> None:
        import warnings

        from torch.nn.parallel import DistributedDataParallel as DDP

        # the reducer compares strides literally, so the gradient of a parameter with size-1 dims
        # (the CLS token [1, 1, D], sliced out of the token gradient) "mismatches" its bucket view;
        # the copy is correct and the tensor tiny, so this warning (once per rank) says nothing
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

        self.holder = LossModule(model, extra)
        self.ddp = DDP(self.holder, device_ids=None, find_unused_parameters=True, gradient_as_bucket_view=True)

    def forward(self, fn: Callable[[Batch], LossOutput], batch: Batch) -> LossOutput:
        self.holder._fn = fn
        try:
            loss, metrics = self.ddp(batch)
        finally:
            self.holder._fn = None
        return LossOutput(loss=loss, metrics=metrics)

    def no_sync(self) -> Any:
        return self.ddp.no_sync()
