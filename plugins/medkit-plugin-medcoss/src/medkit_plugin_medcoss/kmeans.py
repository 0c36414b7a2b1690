"""Seeded, chunked k-means on torch (CPU or CUDA) for buffer selection at any N (spec §5.1, §10.2-19)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator, Protocol, Union, runtime_checkable

import torch

from medkit.api.errors import ConfigError

log = logging.getLogger(__name__)

#: Largest distance block ``rows × centroids`` computed at once (fp32 elements, 64 MiB).
MAX_BLOCK = 1 << 24
#: Float slack so that ``int(0.05 / 0.01)`` is 5 and ``int(0.29 * 100)`` is 29.
_EPS = 1e-9


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


Data = Union[torch.Tensor, RowSource]


@dataclass
class Assignment:
    """Nearest centroid of every row: ``labels [N]``, exact squared distances ``sq_dist [N]``."""

    labels: torch.Tensor
    sq_dist: torch.Tensor
    inertia: float


@dataclass
class KMeansResult:
    """A fitted clustering: ``centroids [K, D]`` plus the final assignment of every row."""

    centroids: torch.Tensor
    labels: torch.Tensor
    sq_dist: torch.Tensor
    inertia: float
    iterations: int
    converged: bool


def buffer_sizes(num_samples: int, buffer_ratio: float, num_center: float) -> tuple[int, int]:
    """``(K, k)``: ``K = max(1, int(num_center·N))`` clusters (at most N), ``k = max(1,
    int(buffer_ratio / num_center))`` samples kept per cluster (spec §5.1)."""
    if not 0.0 < buffer_ratio <= 1.0 or not 0.0 < num_center <= 1.0:
        raise ConfigError(f"buffer_ratio ({buffer_ratio}) and num_center ({num_center}) must be in (0, 1]; "
                          f"MedCoSS uses strategy.buffer_ratio=0.05 strategy.num_center=0.01")
    clusters = min(max(1, int(num_center * num_samples + _EPS)), max(1, num_samples))
    per_cluster = max(1, int(buffer_ratio / num_center + _EPS))
    return clusters, per_cluster


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


def _nearest(rows: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centroid (the first one on ties) and the exact squared distance to it,
    with the ``rows × K`` distance matrix computed in blocks of at most :data:`MAX_BLOCK`."""
    n, k = rows.shape[0], centroids.shape[0]
    block = max(1, MAX_BLOCK // max(n, 1))
    best = torch.full((n,), float("inf"), device=rows.device)
    label = torch.zeros(n, dtype=torch.long, device=rows.device)
    x_sq = (rows * rows).sum(1)
    c_sq = (centroids * centroids).sum(1)
    for c0 in range(0, k, block):
        d = sq_distances(rows, centroids[c0:c0 + block], x_sq=x_sq, c_sq=c_sq[c0:c0 + block])  # [n, b]
        val, arg = d.min(dim=1)
        better = val < best
        best = torch.where(better, val, best)
        label = torch.where(better, arg + c0, label)
    exact = ((rows - centroids[label]) ** 2).sum(1)  # [n] no cancellation
    return label, exact


def assign(data: Data, centroids: torch.Tensor, *, batch: int = 4096,
           device: torch.device | str | None = None) -> Assignment:
    """Nearest centroid of every row of ``data``, streamed ``batch`` rows at a time."""
    dev = torch.device(device) if device is not None else centroids.device
    n, _ = _shape(data)
    c = centroids.to(dev, torch.float32)
    labels = torch.empty(n, dtype=torch.long)
    sq = torch.empty(n, dtype=torch.float32)
    for start, rows in _chunks(data, batch, dev):
        lab, dist = _nearest(rows, c)
        labels[start:start + rows.shape[0]] = lab.cpu()
        sq[start:start + rows.shape[0]] = dist.cpu()
    return Assignment(labels=labels, sq_dist=sq, inertia=float(sq.double().sum()))


# -- initialisation ----------------------------------------------------------------------------
def kmeans_plus_plus(x: torch.Tensor, num_clusters: int, *, generator: torch.Generator,
                     local_trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding of ``x [m, D]`` (Arthur & Vassilvitskii; sklearn's greedy variant):
    each new centre is the best of ``local_trials`` (default ``2 + int(ln K)``) candidates drawn with
    probability proportional to the squared distance to the nearest chosen centre. All random draws
    come from ``generator`` (CPU), so the result is a function of the seed."""
    m = x.shape[0]
    trials = int(local_trials) if local_trials else 2 + int(math.log(num_clusters))
    centers = torch.empty(num_clusters, x.shape[1], dtype=torch.float32, device=x.device)
    x_sq = (x * x).sum(1)  # [m]
    first = int(torch.randint(m, (1,), generator=generator))
    centers[0] = x[first]
    closest = sq_distances(x, centers[:1], x_sq=x_sq)[:, 0].double()  # [m]
    pot = closest.sum()
    for c in range(1, num_clusters):
        draws = torch.rand(trials, generator=generator, dtype=torch.float64).to(x.device) * pot
        cand = torch.searchsorted(torch.cumsum(closest, 0), draws).clamp_(max=m - 1)  # [t]
        d_new = sq_distances(x[cand], x, x_sq=x_sq[cand], c_sq=x_sq)  # [t, m]
        d = torch.minimum(closest[None], d_new.double())  # [t, m]
        pots = d.sum(1)
        best = int(torch.argmin(pots))
        closest, pot = d[best], pots[best]
        centers[c] = x[cand[best]]
    return centers


# -- fitting -----------------------------------------------------------------------------------
def _mean_variance(data: Data, batch: int, device: torch.device) -> float:
    n, d = _shape(data)
    s = torch.zeros(d, dtype=torch.float64, device=device)
    s2 = torch.zeros(d, dtype=torch.float64, device=device)
    for _, rows in _chunks(data, batch, device):
        r = rows.double()
        s += r.sum(0)
        s2 += (r * r).sum(0)
    mean = s / max(n, 1)
    return float((s2 / max(n, 1) - mean * mean).clamp_min(0).mean())


def _lloyd_pass(data: Data, centroids: torch.Tensor, batch: int,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One E-step: labels, exact distances, per-cluster sums and counts, and the indices of the
    rows farthest from their centre (candidates to re-seed empty clusters), farthest first."""
    dev = centroids.device
    k, d = centroids.shape
    n, _ = _shape(data)
    sums = torch.zeros(k, d, dtype=torch.float64, device=dev)
    counts = torch.zeros(k, dtype=torch.long, device=dev)
    labels = torch.empty(n, dtype=torch.long)
    sq = torch.empty(n, dtype=torch.float32)
    far_val = torch.empty(0, device=dev)
    far_idx = torch.empty(0, dtype=torch.long, device=dev)
    for start, rows in _chunks(data, batch, dev):
        lab, dist = _nearest(rows, centroids)
        sums.index_add_(0, lab, rows.double())
        counts += torch.bincount(lab, minlength=k)
        labels[start:start + rows.shape[0]] = lab.cpu()
        sq[start:start + rows.shape[0]] = dist.cpu()
        far_val = torch.cat([far_val, dist])
        far_idx = torch.cat([far_idx, torch.arange(start, start + rows.shape[0], device=dev)])
        if far_val.numel() > k:
            far_val, keep = torch.topk(far_val, k, sorted=True)
            far_idx = far_idx[keep]
    order = torch.argsort(-far_val, stable=True)
    return labels, sq, sums, counts, far_idx[order].cpu()


def _update(data: Data, centroids: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor,
            far_idx: torch.Tensor) -> torch.Tensor:
    """M-step: cluster means; an empty cluster is moved onto a far-away row (sklearn's rule)."""
    new = (sums / counts.clamp_min(1)[:, None].double()).float()
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        donors = far_idx[: empty.numel()]
        new[empty[: donors.numel()]] = _rows(data, donors, centroids.device)
        new[empty[donors.numel():]] = centroids[empty[donors.numel():]]
        log.debug("k-means: re-seeded %d empty clusters", int(empty.numel()))
    return new


def _lloyd(data: Data, centroids: torch.Tensor, *, iters: int, batch: int, tol: float,
           ) -> tuple[torch.Tensor, Assignment | None, int, bool]:
    previous: torch.Tensor | None = None
    for it in range(1, iters + 1):
        labels, sq, sums, counts, far = _lloyd_pass(data, centroids, batch)
        if previous is not None and torch.equal(labels, previous):
            # no label moved: the centroids are the means of their members already
            return centroids, Assignment(labels, sq, float(sq.double().sum())), it, True
        new = _update(data, centroids, sums, counts, far)
        shift = float(((new - centroids) ** 2).sum())
        centroids, previous = new, labels
        if shift <= tol and not bool((counts == 0).any()):
            return centroids, None, it, True
    return centroids, None, iters, False


def _minibatch(data: Data, centroids: torch.Tensor, *, iters: int, batch: int, tol: float,
               generator: torch.Generator) -> tuple[torch.Tensor, int, bool]:
    """Sculley's mini-batch k-means: ``iters`` epochs over seeded permutations, per-centre rate 1/count."""
    n, _ = _shape(data)
    dev = centroids.device
    k = centroids.shape[0]
    seen = torch.zeros(k, dtype=torch.float64, device=dev)
    for epoch in range(1, iters + 1):
        before = centroids.clone()
        perm = torch.randperm(n, generator=generator)
        for s in range(0, n, batch):
            idx = perm[s:s + batch].sort().values
            rows = _rows(data, idx, dev)
            lab, _ = _nearest(rows, centroids)
            cnt = torch.bincount(lab, minlength=k).double()
            sums = torch.zeros(k, rows.shape[1], dtype=torch.float64, device=dev).index_add_(0, lab, rows.double())
            seen += cnt
            hit = cnt > 0
            rate = torch.where(hit, cnt / seen.clamp_min(1), torch.zeros_like(cnt))  # [K]
            means = sums / cnt.clamp_min(1)[:, None]
            centroids = (centroids.double() + rate[:, None] * (means - centroids.double())).float()
        if float(((centroids - before) ** 2).sum()) <= tol:
            return centroids, epoch, True
    return centroids, iters, False


def fit(data: Data, num_clusters: int, *, iters: int = 50, batch: int = 4096, seed: int = 0,
        tol: float = 1e-4, init_sample: int | None = None, local_trials: int | None = None,
        method: str = "lloyd", device: torch.device | str | None = None) -> KMeansResult:
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
    """
    n, _ = _shape(data)
    if not 1 <= num_clusters <= n:
        raise ConfigError(f"k-means: num_clusters must be in [1, {n}] for {n} samples, got {num_clusters}")
    if method not in ("lloyd", "minibatch"):
        raise ConfigError(f"k-means: method must be 'lloyd' or 'minibatch', got {method!r}")
    dev = torch.device(device) if device is not None else _default_device(data)
    gen = torch.Generator().manual_seed(int(seed))
    tol_abs = float(tol) * _mean_variance(data, batch, dev)
    m = min(n, int(init_sample) if init_sample else max(20 * num_clusters, 10_000))
    idx = torch.arange(n) if m >= n else torch.randperm(n, generator=gen)[:m].sort().values
    centroids = kmeans_plus_plus(_rows(data, idx, dev), num_clusters, generator=gen, local_trials=local_trials)
    final: Assignment | None = None
    if method == "lloyd":
        centroids, final, it, converged = _lloyd(data, centroids, iters=iters, batch=batch, tol=tol_abs)
    else:
        centroids, it, converged = _minibatch(data, centroids, iters=iters, batch=batch, tol=tol_abs,
                                              generator=gen)
    if final is None:
        final = assign(data, centroids, batch=batch, device=dev)
    log.debug("k-means: N=%d K=%d %s, %d iterations (converged %s), inertia %.4g", n, num_clusters,
              method, it, converged, final.inertia)
    return KMeansResult(centroids=centroids.cpu(), labels=final.labels, sq_dist=final.sq_dist,
                        inertia=final.inertia, iterations=it, converged=converged)


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
