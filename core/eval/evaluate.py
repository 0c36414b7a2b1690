"""Held-out evaluation after each stage: the pretext loss, the probes, and the stage's record."""

from __future__ import annotations

import logging
import math
import zlib
from typing import Any, Mapping

import torch

from medkit.api.context import RunContext
from medkit.eval.probes import NO_LABELS, ProbeOptions, labelled_split, probe_metrics, probe_modality
from medkit.eval.records import evaluation_record

log = logging.getLogger(__name__)

NO_HELD_OUT = "no held-out samples (the split left none; add data or raise trainer.val_fraction)"


def probe_options(trainer: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluate_seen`` keywords from the ``trainer.probe_*`` keys present in a config (older API;
    prefer :meth:`ProbeOptions.from_trainer`)."""
    keys = {"probe_knn_k": "knn_k", "probe_linear_steps": "linear_steps", "probe_knn_vote": "knn_vote",
            "probe_unseen": "probe_unseen", "probe_max_train": "probe_max_train",
            "probe_max_query": "probe_max_query"}
    return {kw: trainer[key] for key, kw in keys.items() if key in trainer}


@torch.no_grad()
def pretext_loss(ctx: RunContext, modality: str, *, max_batches: int) -> float:
    """Mean held-out pretext loss of ``modality`` in eval mode with a fixed masking generator
    (NaN when the modality has no held-out sample)."""
    indices = list(ctx.val_indices[modality])[: max(1, max_batches) * ctx.batch_size]
    if not indices:
        return float("nan")
    gen = torch.Generator().manual_seed(ctx.seed * 1000 + zlib.crc32(modality.encode()) % 1000)
    head = ctx.heads[modality]
    states = (ctx.encoder.training, head.training)
    ctx.encoder.eval()
    head.eval()
    total, count = 0.0, 0
    try:
        chunks = [indices[k:k + ctx.batch_size] for k in range(0, len(indices), ctx.batch_size)]
        for batch in ctx.load_batches(modality, chunks):  # in the run's DataLoader workers, if any
            out = head(ctx.encoder, batch, generator=gen)
            total += float(out.loss) * len(batch)
            count += len(batch)
    finally:
        ctx.encoder.train(states[0])
        head.train(states[1])
    return total / max(count, 1)


def evaluate_cells(ctx: RunContext, strategy: Any, *, max_batches: int, options: ProbeOptions,
                   not_evaluated: Mapping[str, str] | None = None,
                   ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]]]:
    """``({metric: {modality: value}}, {metric: {modality: reason}})`` after a stage.

    ``pretext_loss`` for every modality seen so far; ``knn_acc`` / ``linear_acc`` (see
    :mod:`medkit.eval.probes`) for every labelled modality seen so far and, with ``options.unseen``,
    for later stages' modalities too. Each modality is evaluated inside ``strategy.eval_context``.
    A modality in ``not_evaluated`` (or ``ctx.not_evaluated``) is not evaluated at all:
    its cells are unavailable with the given reason, never computed on other data. A modality
    without held-out samples, or one that cannot be probed (no labels, one class, too few
    samples), has unavailable cells with the reason (logged once per run).
    """
    skip = {**dict(ctx.not_evaluated), **dict(not_evaluated or {})}
    probes = probe_metrics(options)
    values: dict[str, dict[str, float]] = {"pretext_loss": {}, **{k: {} for k in probes}}
    missing: dict[str, dict[str, str]] = {k: {} for k in values}
    seen = list(ctx.seen)
    probed = [] if not probes else (list(ctx.modalities) if options.unseen else seen)
    skipped = ctx.evaluation.probe_skipped
    logged = ctx.evaluation.not_evaluated_logged
    for m in [*seen, *[p for p in probed if p not in seen]]:
        wanted = (["pretext_loss"] if m in seen else []) + (probes if m in probed else [])
        if m in skip:
            for k in wanted:
                missing[k][m] = skip[m]
            if m not in logged:
                logged.add(m)
                log.warning("%s: not evaluated (%s)", m, skip[m])
            continue
        reason = skipped.get(m)
        with strategy.eval_context(ctx, m):
            if m in seen:
                loss = pretext_loss(ctx, m, max_batches=max_batches) if ctx.val_indices[m] else math.nan
                if math.isfinite(loss):
                    values["pretext_loss"][m] = loss
                else:
                    missing["pretext_loss"][m] = NO_HELD_OUT if not ctx.val_indices[m] else "the loss is not finite"
            if m in probed and reason is None:
                got, reason = probe_modality(ctx, m, options)
                if reason is not None:
                    skipped[m] = reason
                    log.info("%s: no kNN/linear probe (%s)", m, reason)
                for k, v in got.items():
                    values[k][m] = v
        if m in probed and reason is not None:
            for k in probes:
                missing[k][m] = reason
    # a probe metric no modality can have (no labels anywhere) gets no matrix at all
    keep = [k for k in values if values[k] or k == "pretext_loss"
            or any(reason != NO_LABELS for reason in missing[k].values())]
    return {k: values[k] for k in keep}, {k: missing[k] for k in keep if missing[k]}


def evaluate_seen(ctx: RunContext, strategy: Any, *, max_batches: int, knn_k: int = ProbeOptions.knn_k,
                  linear_steps: int = ProbeOptions.linear_steps, knn_vote: str = ProbeOptions.knn_vote,
                  probe_unseen: bool = ProbeOptions.unseen, probe_max_train: int = ProbeOptions.max_train,
                  probe_max_query: int = ProbeOptions.max_query,
                  not_evaluated: Mapping[str, str] | None = None) -> dict[str, dict[str, float]]:
    """``{metric: {modality: value}}`` after a stage (the values of :func:`evaluate_cells`; the
    defaults are :class:`ProbeOptions`'). Prefer :func:`evaluate_stage`, which also keeps the
    reasons of unavailable cells."""
    options = ProbeOptions(knn_k=knn_k, linear_steps=linear_steps, knn_vote=knn_vote, unseen=probe_unseen,
                           max_train=probe_max_train, max_query=probe_max_query)
    values, _ = evaluate_cells(ctx, strategy, max_batches=max_batches, options=options,
                               not_evaluated=not_evaluated)
    return values


def want_probe_features(ctx: RunContext, options: ProbeOptions) -> None:
    """Before the strategy's ``after_stage``: tell ``ctx.feature_cache`` which training samples of
    the stage's modalities the probes will encode (their labelled, capped subset), so that a pass
    over the training set with the same weights (the rehearsal buffer's) keeps those rows and
    :func:`evaluate_stage` reuses them instead of encoding them again. Drops any row kept before."""
    cache = getattr(ctx, "feature_cache", None)
    if cache is None:
        return
    cache.clear()
    if not probe_metrics(options):
        return
    skip = dict(ctx.not_evaluated)
    for m in ctx.stage:
        if m in skip or m not in ctx.eval_sets:
            continue
        split = labelled_split(ctx.eval_sets[m], ctx.train_indices[m], ctx.val_indices[m],
                               max_train=options.max_train, max_query=options.max_query)
        if split.reason is None:
            cache.want(m, split.train)


def evaluate_stage(ctx: RunContext, strategy: Any, *, eval_batches: int, probes: ProbeOptions,
                   not_evaluated: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The evaluation record of the stage just finished (``ctx.stage_index``), ready for
    ``eval.json``: ``{"after_stage": ctx.stage_index + 1, "modalities", "metrics", "unavailable"}``.

    Args:
        ctx: the run context after the stage's training.
        strategy: the run's strategy (its ``eval_context`` wraps each modality).
        eval_batches: held-out batches per modality for the pretext loss (``trainer.eval_batches``).
        probes: the probes' options (``trainer.probe_*``: :meth:`ProbeOptions.from_trainer`).
        not_evaluated: ``{modality: reason}`` of modalities not to evaluate (added to
            ``ctx.not_evaluated``).
    """
    try:
        values, missing = evaluate_cells(ctx, strategy, max_batches=int(eval_batches), options=probes,
                                         not_evaluated=not_evaluated)
    finally:
        cache = getattr(ctx, "feature_cache", None)
        if cache is not None:  # the rows kept for the probes are read: free them
            cache.clear()
    return evaluation_record(ctx.stage_index, list(ctx.stage), values, missing)
