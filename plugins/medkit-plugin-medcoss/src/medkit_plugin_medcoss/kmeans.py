"""Seeded, chunked k-means on torch (CPU or CUDA) for buffer selection at any N."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, runtime_checkable

import torch

from medkit.api import ConfigError

log = logging.getLogger(__name__)

#: Largest distance block ``rows × centroids`` computed at once (fp32 elements, 64 MiB).
MAX_BLOCK = 1 << 24
#: Float slack so that ``int(0.05 / 0.01)`` is 5 and ``int(0.29 * 100)`` is 29.


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


# -- initialisation ----------------------------------------------------------------------------
def seeding_dtype(device: torch.device, dim: int) -> torch.dtype:
    """The dtype :func:`kmeans_plus_plus` computes candidate distances in by default: bfloat16 on a
    CPU with native bf16 dot products (AVX512-BF16 / AMX) for ``dim ≥ 64``, where the few-row
    products are bound by reading the sample and half the bytes is twice the speed; else float32."""
    if device.type != "cpu" or dim < 64:
        return torch.float32
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        if callable(fn) and fn():
            return torch.bfloat16
    return torch.float32


def kmeans_plus_plus(x: torch.Tensor, num_clusters: int, *, generator: torch.Generator,
                     local_trials: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding of ``x [m, D]`` (Arthur & Vassilvitskii; sklearn's greedy variant):
    each new centre is the best of ``local_trials`` (default ``2 + int(ln K)``) candidates drawn with
    probability proportional to the squared distance to the nearest chosen centre. All random draws
    come from ``generator`` (CPU), so the result is a function of the seed (and the hardware's
    arithmetic).

    The distances that weight the draws are computed on the mean-centred sample (the same distances,
    smaller norms) in ``dtype`` (default :func:`seeding_dtype`), stored ``[D, m]`` so that each step
    is one ``[t, D] @ [D, m]`` product; the chosen centres are rows of ``x`` as given."""
    m, dim = x.shape
    trials = int(local_trials) if local_trials else 2 + int(math.log(num_clusters))
    dt = dtype or seeding_dtype(x.device, dim)
    xt = (x - x.mean(0, keepdim=True)).T.to(dt).contiguous()  # [D, m], centred
    x_sq = xt.float().pow_(2).sum(0) if dt != torch.float32 else (xt * xt).sum(0)  # [m] of the stored values
    chosen = torch.empty(num_clusters, dtype=torch.long)
    first = int(torch.randint(m, (1,), generator=generator))
    chosen[0] = first

    def dist_to(cand: torch.Tensor) -> torch.Tensor:  # [t] rows -> [t, m] squared distances, float32
        dots = torch.mm(xt[:, cand].T, xt).float()  # [t, m]
        return dots.mul_(-2.0).add_(x_sq[None]).add_(x_sq[cand][:, None]).clamp_min_(0.0)

    closest = dist_to(torch.tensor([first], device=x.device))[0]  # [m]
    pot = closest.sum(dtype=torch.float64)
    for c in range(1, num_clusters):
        draws = torch.rand(trials, generator=generator, dtype=torch.float64).to(x.device) * pot
        cand = torch.searchsorted(torch.cumsum(closest, 0, dtype=torch.float64), draws).clamp_(max=m - 1)  # [t]
        d = torch.minimum(closest[None], dist_to(cand))  # [t, m]
        pots = d.sum(1, dtype=torch.float64)
        best = int(torch.argmin(pots))
        closest, pot = d[best], pots[best]
        chosen[c] = cand[best]
    return x[chosen.to(x.device)].float()


# -- fitting -----------------------------------------------------------------------------------
def _mean_variance(data: Data, batch: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """The mean per-feature variance and every row's squared norm ``[N]`` (one pass; chunk sums in
    float32, accumulated in float64)."""
    n, d = _shape(data)
    s = torch.zeros(d, dtype=torch.float64, device=device)
    s2 = torch.zeros(d, dtype=torch.float64, device=device)
    x_sq = torch.empty(n, dtype=torch.float32, device=device)
    for start, rows in _chunks(data, batch, device):
        sq = rows * rows
        s += rows.sum(0)
        s2 += sq.sum(0)
        x_sq[start:start + rows.shape[0]] = sq.sum(1)
    mean = s / max(n, 1)
    return float((s2 / max(n, 1) - mean * mean).clamp_min(0).mean()), x_sq


def _lloyd_pass(data: Data, centroids: torch.Tensor, batch: int, x_sq: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One E-step: labels, squared distances (exact unless the rows' squared norms ``x_sq [N]`` are
    given, then ``|x|² + |c|² − 2x·c``), per-cluster sums and counts, and the indices of the ``K``
    rows farthest from their centre (candidates to re-seed empty clusters), farthest first."""
    dev = centroids.device
    k, d = centroids.shape
    n, _ = _shape(data)
    c_sq = (centroids * centroids).sum(1)
    sums = torch.zeros(k, d, dtype=torch.float64, device=dev)
    part = torch.empty(k, d, dtype=torch.float32, device=dev)
    counts = torch.zeros(k, dtype=torch.long, device=dev)
    labels = torch.empty(n, dtype=torch.long)
    sq = torch.empty(n, dtype=torch.float32)
    for start, rows in _chunks(data, batch, dev):
        stop = start + rows.shape[0]
        lab, dist = _nearest(rows, centroids, c_sq, exact=x_sq is None,
                             x_sq=None if x_sq is None else x_sq[start:stop].to(dev))
        sums += part.zero_().index_add_(0, lab, rows)  # chunk sums in float32, the total in float64
        counts += torch.bincount(lab, minlength=k)
        labels[start:stop] = lab.cpu()
        sq[start:stop] = dist.cpu()
    far = torch.topk(sq, min(k, n), sorted=True).indices
    order = torch.argsort(-sq[far], stable=True)
    return labels, sq, sums, counts, far[order]


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
           x_sq: torch.Tensor | None = None, progress: Progress | None = None,
           ) -> tuple[torch.Tensor, Assignment | None, int, bool]:
    previous: torch.Tensor | None = None
    for it in range(1, iters + 1):
        labels, sq, sums, counts, far = _lloyd_pass(data, centroids, batch, x_sq)
        if previous is not None and torch.equal(labels, previous):
            # no label moved: the centroids are the means of their members already
            if x_sq is not None:
                sq = _exact_pass(data, centroids, labels, batch)
            return centroids, Assignment(labels, sq, float(sq.double().sum())), it, True
        new = _update(data, centroids, sums, counts, far)
        shift = float(((new - centroids) ** 2).sum())
        centroids, previous = new, labels
        if shift <= tol and not bool((counts == 0).any()):
            return centroids, None, it, True
        if progress is not None:
            progress(it)
    return centroids, None, iters, False


def _exact_pass(data: Data, centroids: torch.Tensor, labels: torch.Tensor, batch: int) -> torch.Tensor:
    """Exact squared distances ``[N]`` of every row to its labelled centroid (no products)."""
    n, _ = _shape(data)
    sq = torch.empty(n, dtype=torch.float32)
    for start, rows in _chunks(data, batch, centroids.device):
        stop = start + rows.shape[0]
        sq[start:stop] = _exact_sq(rows, centroids, labels[start:stop].to(centroids.device)).cpu()
    return sq


def _minibatch(data: Data, centroids: torch.Tensor, *, iters: int, batch: int, tol: float,
               generator: torch.Generator, progress: Progress | None = None) -> tuple[torch.Tensor, int, bool]:
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
            lab, _ = _nearest(rows, centroids, exact=False)
            cnt = torch.bincount(lab, minlength=k).double()
            sums = torch.zeros(k, rows.shape[1], dtype=torch.float64, device=dev).index_add_(0, lab, rows.double())
            seen += cnt
            hit = cnt > 0
            rate = torch.where(hit, cnt / seen.clamp_min(1), torch.zeros_like(cnt))  # [K]
            means = sums / cnt.clamp_min(1)[:, None]
            centroids = (centroids.double() + rate[:, None] * (means - centroids.double())).float()
        if float(((centroids - before) ** 2).sum()) <= tol:
            return centroids, epoch, True
        if progress is not None:
            progress(epoch)
    return centroids, iters, False


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


def init_rows(num_rows: int, num_clusters: int, generator: torch.Generator,
              init_sample: int | None = None) -> torch.Tensor:
    """The sorted rows k-means++ seeds on: all rows up to ``max(20·K, 10000)`` (or ``init_sample``),
    else that many drawn without replacement from ``generator`` (the first draw :func:`fit` makes)."""
    m = min(num_rows, int(init_sample) if init_sample else max(20 * num_clusters, 10_000))
    return torch.arange(num_rows) if m >= num_rows else torch.randperm(num_rows, generator=generator)[:m].sort().values


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
