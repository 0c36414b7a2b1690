"""Chunk-aware epoch permutations for prepared sources: chunks shuffled, samples shuffled within a few chunks."""

from __future__ import annotations

import bisect
from typing import Any, Mapping, Sequence

import torch

#: Chunks whose samples are shuffled together. Reading a prepared source in a fully random order
#: reloads a chunk for almost every sample; with windows of this many chunks at most this many
#: chunks are in use at any time, and a batch still mixes samples of several chunks.
CHUNK_WINDOW = 4


def chunk_of(indices: Sequence[int], chunk_sizes: Sequence[int]) -> list[int]:
    """The chunk of every dataset index in ``indices``, for chunks of ``chunk_sizes`` samples laid
    end to end (chunk ``c`` holds indices ``sum(chunk_sizes[:c])`` up to the next chunk's first).

    Raises:
        IndexError: for an index past the last chunk.
    """
    ends: list[int] = []
    total = 0
    for size in chunk_sizes:
        total += int(size)
        ends.append(total)
    out = []
    for i in indices:
        c = bisect.bisect_right(ends, int(i))
        if c >= len(ends) or i < 0:
            raise IndexError(f"sample {i} lies outside the {total} samples of the declared chunks")
        out.append(c)
    return out


def chunk_permutation(chunks: Sequence[int], generator: torch.Generator, window: int = CHUNK_WINDOW) -> torch.Tensor:
    """A permutation of the positions ``0..len(chunks)-1`` that visits chunks one window at a time.

    The distinct chunks are put in a random order and cut into windows of ``window`` consecutive
    chunks; the positions of a window's chunks are shuffled together and the windows follow each
    other. Every position appears once, and once the permutation has left a window it never
    returns to its chunks, so a reader that keeps ``window`` chunks open reads each chunk once per
    epoch. Everything is drawn from ``generator`` alone (no dependence on ranks or history).
    When all the chunks fit in one window this is the plain ``randperm`` of the folder path, so
    small prepared data trains in exactly the folder path's order.

    Args:
        chunks: the chunk of every position (:func:`chunk_of` of a source's indices).
        generator: the epoch's generator (seeded by the plan from seed, stage, source and epoch).
        window: chunks per window (>= 1).

    Returns:
        int64 positions ``[len(chunks)]``.
    """
    window = max(1, int(window))
    members: dict[int, list[int]] = {}
    for pos, c in enumerate(chunks):
        members.setdefault(int(c), []).append(pos)
    if len(members) <= window:  # every chunk fits one window: the plain permutation is already chunk-local
        return torch.randperm(len(chunks), generator=generator)
    order = sorted(members)
    visit = [order[int(j)] for j in torch.randperm(len(order), generator=generator)]
    out: list[torch.Tensor] = []
    for lo in range(0, len(visit), window):
        positions = torch.tensor([p for c in visit[lo:lo + window] for p in members[c]], dtype=torch.long)
        out.append(positions[torch.randperm(len(positions), generator=generator)])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def declared_chunks(datasets: Mapping[str, Any]) -> dict[str, list[int]]:
    """``{modality: chunk sizes}`` of the datasets that declare how they are stored (an optional
    ``chunk_sizes`` attribute: samples per chunk, in index order); folder datasets declare none."""
    out: dict[str, list[int]] = {}
    for name, dataset in datasets.items():
        sizes = getattr(dataset, "chunk_sizes", None)
        if sizes:
            out[name] = [int(v) for v in sizes]
    return out
