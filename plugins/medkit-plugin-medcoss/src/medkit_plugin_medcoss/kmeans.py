"""Seeded, chunked k-means on torch (CPU or CUDA) for buffer selection at any N."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from medkit.api import ConfigError
from medkit_plugin_medcoss.distances import (
    MAX_BLOCK,
    Assignment,
    Data,
    Progress,
    RowSource,
    _default_device,
    _rows,
    _shape,
    assign,
    chunked_sq_distances,
    sq_distances,
)
from medkit_plugin_medcoss.lloyd import _lloyd, _mean_variance, _minibatch
from medkit_plugin_medcoss.seeding import init_rows, kmeans_plus_plus, seeding_dtype

log = logging.getLogger(__name__)


@dataclass
class KMeansResult:
    """A fitted clustering: ``centroids [K, D]`` plus the final assignment of every row."""

    centroids: torch.Tensor
    labels: torch.Tensor
    sq_dist: torch.Tensor
    inertia: float
    iterations: int
    converged: bool
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of "seeding" and "iterations"


# -- fitting -----------------------------------------------------------------------------------
def fit(data: Data, num_clusters: int, *, iters: int = 50, batch: int = 4096, seed: int = 0,
        tol: float = 1e-4, init_sample: int | None = None, local_trials: int | None = None,
        method: str = "lloyd", device: torch.device | str | None = None,
        progress: Progress | None = None) -> KMeansResult:
    """Cluster the rows of ``data`` into ``num_clusters``, deterministically for a given ``seed``.

    Memory stays bounded: ``data`` (a tensor or a :class:`RowSource`, e.g. an fp16 memmap) is read
    ``batch`` rows at a time and distance blocks hold at most :data:`MAX_BLOCK` values.

    Args:
        data: features ``[N, D]``.
        num_clusters: K, in ``[1, N]``.
        iters: most Lloyd iterations (or mini-batch epochs).
        batch: rows per chunk (and per mini-batch).
        seed: seeds the k-means++ sample and draws (a CPU ``torch.Generator``).
        tol: stop when the squared centre shift is at most ``tol`` × the mean feature variance
            (sklearn's rule), or as soon as no label changes.
        init_sample: k-means++ runs on this many seeded random rows (default all rows up to
            ``max(20·K, 10000)``); the Lloyd iterations then refine on all rows.
        local_trials: greedy k-means++ candidates per centre (default ``2 + int(ln K)``).
        method: ``"lloyd"`` (full passes) or ``"minibatch"``.
        device: where distances are computed (default: the tensor's device, CPU for a source).
        progress: called ``progress(iterations_done)`` after each iteration that does not end the
            fit (``iters`` is the most there can be: convergence ends it earlier).
    """
    n, _ = _shape(data)
    if not 1 <= num_clusters <= n:
        raise ConfigError(f"k-means: num_clusters must be in [1, {n}] for {n} samples, got {num_clusters}")
    if method not in ("lloyd", "minibatch"):
        raise ConfigError(f"k-means: method must be 'lloyd' or 'minibatch', got {method!r}")
    dev = torch.device(device) if device is not None else _default_device(data)
    gen = torch.Generator().manual_seed(int(seed))
    t0 = time.perf_counter()
    variance, x_sq = _mean_variance(data, batch, dev)
    tol_abs = float(tol) * variance
    idx = init_rows(n, num_clusters, gen, init_sample)
    centroids = kmeans_plus_plus(_rows(data, idx, dev), num_clusters, generator=gen, local_trials=local_trials)
    t1 = time.perf_counter()
    final: Assignment | None = None
    if method == "lloyd":
        centroids, final, it, converged = _lloyd(data, centroids, iters=iters, batch=batch, tol=tol_abs,
                                                 x_sq=x_sq, progress=progress)
    else:
        centroids, it, converged = _minibatch(data, centroids, iters=iters, batch=batch, tol=tol_abs,
                                              generator=gen, progress=progress)
    if final is None:
        final = assign(data, centroids, batch=batch, device=dev)
    t2 = time.perf_counter()
    log.debug("k-means: N=%d K=%d %s, %d iterations (converged %s), inertia %.4g; seeding %.2fs, "
              "iterations %.2fs", n, num_clusters, method, it, converged, final.inertia, t1 - t0, t2 - t1)
    return KMeansResult(centroids=centroids.cpu(), labels=final.labels, sq_dist=final.sq_dist,
                        inertia=final.inertia, iterations=it, converged=converged,
                        seconds={"seeding": t1 - t0, "iterations": t2 - t1})


def select_nearest(labels: torch.Tensor, sq_dist: torch.Tensor, per_cluster: int,
                   num_clusters: int | None = None) -> torch.Tensor:
    """Row indices of the ``per_cluster`` members nearest each centroid (all members of a smaller
    cluster), ordered by cluster, then distance, then row index (ties go to the lower index)."""
    labels = labels.long().cpu()
    k = int(num_clusters) if num_clusters is not None else int(labels.max()) + 1 if labels.numel() else 0
    by_dist = torch.argsort(sq_dist.cpu(), stable=True)  # distance, then index
    by_cluster = by_dist[torch.argsort(labels[by_dist], stable=True)]
    counts = torch.bincount(labels, minlength=k)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labels.numel()) - starts[labels[by_cluster]]
    return by_cluster[rank < int(per_cluster)]


__all__ = ["MAX_BLOCK", "Assignment", "Data", "KMeansResult", "Progress", "RowSource", "assign",
           "chunked_sq_distances", "fit", "init_rows", "kmeans_plus_plus", "seeding_dtype", "select_nearest",
           "sq_distances"]
