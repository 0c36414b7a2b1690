"""Frozen-encoder probes: a cosine kNN classifier and a seeded logistic-regression probe.

Both take features ``[N, D]`` and integer labels and return a held-out accuracy; both are
deterministic (no sampling, a seeded initialisation, full-batch L-BFGS) so a matrix cell computed
twice is the same number. ``probe_modality`` runs them on a run's modality: the training split is
the kNN memory / the probe's training set, the held-out split the queries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from medkit.config.probes import PROBE_TRAINER_DEFAULTS as PROBE_TRAINER_DEFAULTS  # re-exported
from medkit.config.probes import ProbeOptions

log = logging.getLogger(__name__)

KNN_TEMPERATURE = 0.07  # weighted vote: exp(similarity / T), as in DINO's kNN evaluation
MIN_TRAIN_PER_PROBE = 4  # fewer labelled training samples than this: the probe is skipped
NO_LABELS = "the dataset carries no labels"


def knn_accuracy(train: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor,
                 query_labels: torch.Tensor, *, k: int = 5, vote: str = "weighted",
                 temperature: float = KNN_TEMPERATURE) -> float:
    """Accuracy of a k-nearest-neighbour classifier on cosine similarity.

    Args:
        train: memory features ``[N, D]``; train_labels: ``[N]`` int class ids (>= 0).
        query: query features ``[Q, D]``; query_labels: ``[Q]``.
        k: neighbours (capped at ``N``).
        vote: ``"weighted"`` (each neighbour adds ``exp(sim / temperature)`` to its class) or
            ``"majority"`` (one vote each, ties go to the larger summed similarity, then the lower id).
    """
    if vote not in ("weighted", "majority"):
        raise ValueError(f"knn vote must be 'weighted' or 'majority', got {vote!r}")
    if train.shape[0] == 0 or query.shape[0] == 0:
        raise ValueError("knn_accuracy needs at least one memory and one query sample")
    mem = F.normalize(train.double(), dim=1)  # [N, D]
    q = F.normalize(query.double(), dim=1)  # [Q, D]
    sim = q @ mem.T  # [Q, N]
    k = min(int(k), mem.shape[0])
    # stable order: equal similarities resolve by memory index
    order = torch.sort(-sim, dim=1, stable=True).indices[:, :k]  # [Q, k]
    top_sim = sim.gather(1, order)  # [Q, k]
    top_lab = train_labels.long()[order]  # [Q, k]
    classes = int(max(int(train_labels.max()), int(query_labels.max()))) + 1
    sims = torch.zeros(q.shape[0], classes, dtype=torch.float64).scatter_add_(1, top_lab, top_sim)
    if vote == "weighted":
        scores = torch.zeros_like(sims).scatter_add_(1, top_lab, torch.exp(top_sim / temperature))
    else:
        counts = torch.zeros_like(sims).scatter_add_(1, top_lab, torch.ones_like(top_sim))
        scores = counts * (2.0 * k + 1.0) + sims  # |sum of sims| <= k: counts decide, sims break ties
        scores = torch.where(counts > 0, scores, torch.full_like(scores, -float("inf")))
    pred = scores.argmax(dim=1)
    return float((pred == query_labels.long()).double().mean())


def chance_level(labels: Sequence[int] | torch.Tensor) -> float:
    """The majority-class rate of ``labels``: the accuracy of a probe that always answers the
    commonest class of these queries (what an accuracy on them must beat); NaN without labels."""
    values = [int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    if not values:
        return float("nan")
    return max(values.count(c) for c in set(values)) / len(values)


def linear_probe_accuracy(train: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor,
                          query_labels: torch.Tensor, *, steps: int = 100, seed: int = 0,
                          weight_decay: float = 1e-4) -> float:
    """Held-out accuracy of a multinomial logistic regression trained on frozen features.

    Features are standardised with the training set's mean and std; the weights start from a
    seeded small normal draw and are fitted with full-batch L-BFGS (at most ``steps`` iterations,
    strong Wolfe line search, PyTorch's default convergence tolerances) on cross-entropy +
    ``weight_decay``·‖W‖². Runs in float64 on the CPU.
    """
    if train.shape[0] == 0 or query.shape[0] == 0:
        raise ValueError("linear_probe_accuracy needs at least one training and one query sample")
    x = train.double().cpu()
    mean, std = x.mean(0, keepdim=True), x.std(0, unbiased=False, keepdim=True).clamp_min(1e-6)
    x = (x - mean) / std  # [N, D]
    xq = (query.double().cpu() - mean) / std  # [Q, D]
    y = train_labels.long().cpu()
    classes = int(max(int(y.max()), int(query_labels.max()))) + 1
    g = torch.Generator().manual_seed(int(seed))
    weight = (torch.randn(x.shape[1], classes, generator=g, dtype=torch.float64) * 0.01).requires_grad_()
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max(1, int(steps)), history_size=10,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + weight_decay * (weight ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = (xq @ weight + bias).argmax(dim=1)
    return float((pred == query_labels.long().cpu()).double().mean())


@dataclass
class ProbeSplit:
    """Labelled training (memory) and held-out (query) indices of one modality, or why not."""

    train: list[int]
    train_labels: list[int]
    query: list[int]
    query_labels: list[int]
    reason: str | None = None


def labelled_split(dataset: Any, train_indices: Sequence[int], val_indices: Sequence[int], *,
                   max_train: int, max_query: int) -> ProbeSplit:
    """Labelled samples (label >= 0) of each split, capped by an even stride; ``reason`` is set
    when a probe cannot run (no labels, one class, too few samples)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return ProbeSplit([], [], [], [], reason=NO_LABELS)

    def pick(indices: Sequence[int], cap: int) -> tuple[list[int], list[int]]:
        idx = [int(i) for i in indices if labels[i] is not None and int(labels[i]) >= 0]
        if cap > 0 and len(idx) > cap:
            idx = [idx[(j * len(idx)) // cap] for j in range(cap)]
        return idx, [int(labels[i]) for i in idx]

    tr, tr_lab = pick(train_indices, max_train)
    q, q_lab = pick(val_indices, max_query)
    split = ProbeSplit(tr, tr_lab, q, q_lab)
    if len(set(tr_lab)) < 2:
        split.reason = f"{len(set(tr_lab))} class(es) among {len(tr)} labelled training samples (need 2)"
    elif len(tr) < MIN_TRAIN_PER_PROBE:
        split.reason = f"only {len(tr)} labelled training samples (need {MIN_TRAIN_PER_PROBE})"
    elif not q:
        split.reason = "no labelled held-out samples"
    return split


def probe_metrics(options: ProbeOptions) -> list[str]:
    """The metrics ``options`` produce (``knn_acc``, ``linear_acc``)."""
    return [name for name, on in (("knn_acc", options.knn_k > 0), ("linear_acc", options.linear_steps > 0)) if on]


def probe_modality(ctx: Any, modality: str, options: ProbeOptions | None = None,
                   counts: dict[str, int] | None = None,
                   chance: dict[str, float] | None = None) -> tuple[dict[str, float], str | None]:
    """``({"knn_acc": a, "linear_acc": b}, None)`` for ``modality`` with the live encoder, or
    ``({}, reason)`` when its data cannot be probed. ``knn_k <= 0`` / ``linear_steps <= 0`` leaves
    that probe out. Call it inside ``strategy.eval_context``. A ``counts`` dict given is filled
    with ``{"train": memory samples, "query": held-out queries}`` (an accuracy's denominator), a
    ``chance`` dict with ``{"query": the held-out queries' majority-class rate}`` (:func:`chance_level`:
    the accuracy both probes must beat)."""
    o = options or ProbeOptions()
    split = labelled_split(ctx.eval_sets[modality], ctx.train_indices[modality], ctx.val_indices[modality],
                           max_train=o.max_train, max_query=o.max_query)
    if counts is not None:
        counts.update(train=len(split.train), query=len(split.query))
    if chance is not None and split.query_labels:
        chance["query"] = chance_level(split.query_labels)
    if split.reason is not None:
        return {}, split.reason
    mem = ctx.features(modality, split.train)  # [N, D]
    qry = ctx.features(modality, split.query)  # [Q, D]
    y_mem, y_q = torch.tensor(split.train_labels), torch.tensor(split.query_labels)
    out = {}
    if o.knn_k > 0:
        out["knn_acc"] = knn_accuracy(mem, y_mem, qry, y_q, k=o.knn_k, vote=o.knn_vote)
    if o.linear_steps > 0:
        out["linear_acc"] = linear_probe_accuracy(mem, y_mem, qry, y_q, steps=o.linear_steps, seed=ctx.seed)
    return out, None
