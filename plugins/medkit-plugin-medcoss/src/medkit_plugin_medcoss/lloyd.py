"""The k-means iterations: Lloyd's full passes (E-step, M-step with empty-cluster re-seeding) and mini-batch."""

from __future__ import annotations

import logging

import torch

from medkit_plugin_medcoss.distances import Assignment, Data, Progress, _chunks, _exact_sq, _nearest, _rows, _shape

log = logging.getLogger(__name__)


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
