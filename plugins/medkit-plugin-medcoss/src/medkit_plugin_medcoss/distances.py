"""Feature rows for k-means (a tensor or a streamed source) and nearest-centroid distances in bounded blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, runtime_checkable

import torch

#: Largest distance block ``rows × centroids`` computed at once (fp32 elements, 64 MiB).
MAX_BLOCK = 1 << 24


@runtime_checkable
class RowSource(Protocol):
    """Feature rows that need not fit in memory (see :class:`medkit_plugin_medcoss.store.FeatureStore`)."""

    num_rows: int
    dim: int

    def chunks(self, size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, rows [n, dim] float32)`` in order, ``n <= size``."""
        ...

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` as a float32 tensor."""
        ...


Data = torch.Tensor | RowSource
#: ``progress(iterations_done)``, called between iterations
Progress = Callable[[int], None]


@dataclass
class Assignment:
    """Nearest centroid of every row: ``labels [N]``, exact squared distances ``sq_dist [N]``."""

    labels: torch.Tensor
    sq_dist: torch.Tensor
    inertia: float


# -- data access -----------------------------------------------------------------------------
def _shape(data: Data) -> tuple[int, int]:
    if isinstance(data, torch.Tensor):
        if data.ndim != 2:
            raise ValueError(f"k-means expects features [N, D], got shape {tuple(data.shape)}")
        return int(data.shape[0]), int(data.shape[1])
    return int(data.num_rows), int(data.dim)


def _chunks(data: Data, size: int, device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], size):
            yield start, data[start:start + size].to(device=device, dtype=torch.float32)
    else:
        for start, rows in data.chunks(size):
            yield start, rows.to(device=device, dtype=torch.float32)


def _rows(data: Data, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data[index.to(data.device)].to(device=device, dtype=torch.float32)
    return data.rows(index).to(device=device, dtype=torch.float32)


def _default_device(data: Data) -> torch.device:
    return data.device if isinstance(data, torch.Tensor) else torch.device("cpu")


# -- distances -------------------------------------------------------------------------------
def sq_distances(x: torch.Tensor, centroids: torch.Tensor, *, x_sq: torch.Tensor | None = None,
                 c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``[n, K]`` as ``|x|² − 2 x·c + |c|²`` (clamped at 0); the row
    norms ``x_sq [n]`` and ``c_sq [K]`` may be passed when already known."""
    x_sq = (x * x).sum(1) if x_sq is None else x_sq
    c_sq = (centroids * centroids).sum(1) if c_sq is None else c_sq
    d = torch.addmm(x_sq[:, None] + c_sq[None], x, centroids.T, alpha=-2.0)
    return d.clamp_min_(0.0)


def chunked_sq_distances(x: Data, centroids: torch.Tensor, *, batch: int = 4096) -> torch.Tensor:
    """All squared distances ``[N, K]`` computed ``batch`` rows at a time (for small N and checks)."""
    n, _ = _shape(x)
    out = torch.empty(n, centroids.shape[0], dtype=torch.float32, device=centroids.device)
    for start, rows in _chunks(x, batch, centroids.device):
        out[start:start + rows.shape[0]] = sq_distances(rows, centroids.float())
    return out


def _nearest(rows: torch.Tensor, centroids: torch.Tensor, c_sq: torch.Tensor | None = None, *,
             exact: bool = True, x_sq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centroid (the first one on ties) and the squared distance to it, with
    the ``rows × K`` matrix computed in blocks of at most :data:`MAX_BLOCK` values.

    The ranking uses ``|c|² − 2 x·c`` (a row's own ``|x|²`` is the same for every centroid, so one
    GEMM and one ``min`` per block). ``exact``: the returned distance is recomputed as
    ``|x − c|²`` (no cancellation); else it is ``|x|² + min`` clamped at 0 (``x_sq`` may be passed).
    """
    n, k = rows.shape[0], centroids.shape[0]
    block = max(1, MAX_BLOCK // max(n, 1))
    c_sq = (centroids * centroids).sum(1) if c_sq is None else c_sq
    if k <= block:
        best, label = torch.addmm(c_sq[None], rows, centroids.T, alpha=-2.0).min(dim=1)  # [n]
    else:
        best = torch.full((n,), float("inf"), device=rows.device)
        label = torch.zeros(n, dtype=torch.long, device=rows.device)
        for c0 in range(0, k, block):
            val, arg = torch.addmm(c_sq[None, c0:c0 + block], rows, centroids[c0:c0 + block].T,
                                   alpha=-2.0).min(dim=1)  # [n] over this block
            better = val < best
            best = torch.where(better, val, best)
            label = torch.where(better, arg + c0, label)
    if exact:
        return label, _exact_sq(rows, centroids, label)
    x_sq = (rows * rows).sum(1) if x_sq is None else x_sq
    return label, best.add_(x_sq).clamp_min_(0.0)


def _exact_sq(rows: torch.Tensor, centroids: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``|rows − centroids[label]|²`` per row, ``[n]`` (no cancellation)."""
    diff = rows - centroids[label]  # [n, D]
    return diff.mul_(diff).sum(1)


def assign(data: Data, centroids: torch.Tensor, *, batch: int = 4096,
           device: torch.device | str | None = None) -> Assignment:
    """Nearest centroid of every row of ``data``, streamed ``batch`` rows at a time."""
    dev = torch.device(device) if device is not None else centroids.device
    n, _ = _shape(data)
    c = centroids.to(dev, torch.float32)
    labels = torch.empty(n, dtype=torch.long)
    sq = torch.empty(n, dtype=torch.float32)
    c_sq = (c * c).sum(1)
    for start, rows in _chunks(data, batch, dev):
        lab, dist = _nearest(rows, c, c_sq)
        labels[start:start + rows.shape[0]] = lab.cpu()
        sq[start:start + rows.shape[0]] = dist.cpu()
    return Assignment(labels=labels, sq_dist=sq, inertia=float(sq.double().sum()))
