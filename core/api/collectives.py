"""Cross-rank collectives a plugin may need in a distributed run (no-ops in a single process)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def _padded(tensor: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every rank's row count, and ``tensor`` padded with zero rows to the longest (collectives
    need one shape on every rank)."""
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    return sizes, padded


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0 (sizes may differ), in rank order."""
    if not dist.is_initialized():
        return tensor
    sizes, padded = _padded(tensor)
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def gather_cat(tensor: torch.Tensor, dst: int = 0) -> torch.Tensor | None:
    """Concatenate ``tensor`` from every rank along dim 0 (sizes may differ), in rank order, on
    rank ``dst`` only: the other ranks get ``None`` and hold nothing but their own part (unlike
    :func:`all_gather_cat`, which puts ``world_size`` × the rows on every rank)."""
    if not dist.is_initialized():
        return tensor
    sizes, padded = _padded(tensor)
    here = dist.get_rank() == dst
    parts = [torch.zeros_like(padded) for _ in sizes] if here else None
    dist.gather(padded, parts, dst=dst)
    if not here:
        return None
    assert parts is not None
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s value (every rank must pass the same shape)."""
    if dist.is_initialized():
        dist.broadcast(tensor, src=src)
    return tensor


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
