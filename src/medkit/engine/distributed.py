"""Process-group helpers for runs under ``torchrun`` (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist


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


def broadcast_parameters(params: Iterable[torch.Tensor]) -> None:
    """Make every rank start from rank 0's weights."""
    if dist.is_initialized():
        for p in params:
            dist.broadcast(p.data, src=0)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce the mean gradient of every trainable parameter in one flat bucket.

    Only parameters that received a gradient take part: every rank trains on the same modality at
    a given step, so the set (and order) is the same on all ranks, and untouched parameters keep
    ``grad=None`` exactly as in a single-process run.
    """
    if not dist.is_initialized():
        return
    params = [p for p in params if p.requires_grad and p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0 (sizes may differ)."""
    if not dist.is_initialized():
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
