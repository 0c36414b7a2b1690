"""Seeded k-means++ initialisation: which rows it seeds on, and the greedy seeding itself."""

from __future__ import annotations

import math

import torch


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


def init_rows(num_rows: int, num_clusters: int, generator: torch.Generator,
              init_sample: int | None = None) -> torch.Tensor:
    """The sorted rows k-means++ seeds on: all rows up to ``max(20·K, 10000)`` (or ``init_sample``),
    else that many drawn without replacement from ``generator`` (the first draw :func:`fit` makes)."""
    m = min(num_rows, int(init_sample) if init_sample else max(20 * num_clusters, 10_000))
    return torch.arange(num_rows) if m >= num_rows else torch.randperm(num_rows, generator=generator)[:m].sort().values
