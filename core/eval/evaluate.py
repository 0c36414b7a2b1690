"""Held-out evaluation after each stage: the pretext loss, the probes, and the stage's record."""

from __future__ import annotations

import logging
import math
import zlib
from typing import Any, Callable, Mapping

import torch

from medkit.api.context import RunContext
from medkit.api.progress import Reporter, work_reporter
from medkit.eval.probes import NO_LABELS, ProbeOptions, labelled_split, probe_metrics, probe_modality
from medkit.eval.records import evaluation_record
from medkit.eval.refit import HeadFactory, refit_loss

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
def pretext_loss(ctx: RunContext, modality: str, *, max_batches: int,
                 progress: Callable[[], None] | None = None, head: torch.nn.Module | None = None) -> float:
    """Mean held-out pretext loss of ``modality`` in eval mode with a fixed masking generator
    (NaN when the modality has no held-out sample), through ``head`` (default: the run's own head
    of the modality — the *stale* decoder for a modality trained in an earlier stage);
    ``progress()`` is called after each batch."""
    indices = list(ctx.val_indices[modality])[: max(1, max_batches) * ctx.batch_size]
    if not indices:
        return float("nan")
    gen = torch.Generator().manual_seed(ctx.seed * 1000 + zlib.crc32(modality.encode()) % 1000)
    head = head if head is not None else ctx.heads[modality]
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
            if progress is not None:
                progress()
    finally:
        ctx.encoder.train(states[0])
        head.train(states[1])
    return total / max(count, 1)


def evaluate_cells(ctx: RunContext, strategy: Any, *, max_batches: int, options: ProbeOptions,
                   not_evaluated: Mapping[str, str] | None = None,
                   counts: dict[str, dict[str, int]] | None = None, make_head: HeadFactory | None = None,
                   chance: dict[str, dict[str, float]] | None = None,
                   ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]]]:
    """``({metric: {modality: value}}, {metric: {modality: reason}})`` after a stage.

    ``pretext_loss`` (the run's own, possibly stale, head) for every modality seen so far;
    ``refit_loss`` (:mod:`medkit.eval.refit`: a fresh head fitted on the frozen encoder) for the same
    modalities — and, with ``options.unseen``, for later ones — when ``make_head`` is given and
    ``options.refit_steps > 0``; ``knn_acc`` / ``linear_acc`` (see
    :mod:`medkit.eval.probes`) for every labelled modality seen so far and, with ``options.unseen``,
    for later stages' modalities too. Each modality is evaluated inside ``strategy.eval_context``.
    A modality in ``not_evaluated`` (or ``ctx.not_evaluated``) is not evaluated at all:
    its cells are unavailable with the given reason, never computed on other data. A modality
    without held-out samples, or one that cannot be probed (no labels, one class, too few
    samples), has unavailable cells with the reason (logged once per run). A ``counts`` dict
    given gets ``{metric: {modality: held-out queries}}`` of every probe value, a ``chance`` dict
    ``{metric: {modality: the queries' majority-class rate}}`` (the probe's chance level).
    """
    skip = {**dict(ctx.not_evaluated), **dict(not_evaluated or {})}
    probes = probe_metrics(options)
    refit = make_head is not None and options.refit_steps > 0
    values: dict[str, dict[str, float]] = {"pretext_loss": {}, **({"refit_loss": {}} if refit else {}),
                                           **{k: {} for k in probes}}
    missing: dict[str, dict[str, str]] = {k: {} for k in values}
    seen = list(ctx.seen)
    probed = [] if not probes else (list(ctx.modalities) if options.unseen else seen)
    refitted = [] if not refit else (list(ctx.modalities) if options.unseen else seen)
    skipped = ctx.evaluation.probe_skipped
    logged = ctx.evaluation.not_evaluated_logged
    bar = _Progress(ctx, [m for m in seen if m not in skip and ctx.val_indices[m]],
                    [m for m in probed if m not in skip and skipped.get(m) is None], max_batches,
                    refitted=[m for m in refitted if m not in skip])
    for m in [*seen, *[p for p in [*probed, *refitted] if p not in seen]]:
        wanted = (["pretext_loss"] if m in seen else []) + (["refit_loss"] if m in refitted else []) + \
            (probes if m in probed else [])
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
                loss = pretext_loss(ctx, m, max_batches=max_batches, progress=bar.step) \
                    if ctx.val_indices[m] else math.nan
                if math.isfinite(loss):
                    values["pretext_loss"][m] = loss
                else:
                    missing["pretext_loss"][m] = NO_HELD_OUT if not ctx.val_indices[m] else "the loss is not finite"
            if m in refitted and make_head is not None:
                loss = refit_loss(ctx, m, make_head, steps=options.refit_steps, lr=options.refit_lr,
                                  max_batches=max_batches, score=_score)
                bar.step()
                if math.isfinite(loss):
                    values["refit_loss"][m] = loss
                else:
                    missing["refit_loss"][m] = NO_HELD_OUT if not ctx.val_indices[m] else \
                        "no training samples to fit a decoder on" if not ctx.train_indices[m] else \
                        "the loss is not finite"
            if m in probed and reason is None:
                sizes: dict[str, int] = {}
                rate: dict[str, float] = {}
                got, reason = probe_modality(ctx, m, options, counts=sizes, chance=rate)
                bar.step()
                if reason is not None:
                    skipped[m] = reason
                    log.info("%s: no kNN/linear probe (%s)", m, reason)
                for k, v in got.items():
                    values[k][m] = v
                    if counts is not None and "query" in sizes:
                        counts.setdefault(k, {})[m] = sizes["query"]
                    if chance is not None and "query" in rate:
                        chance.setdefault(k, {})[m] = rate["query"]
        if m in probed and reason is not None:
            for k in probes:
                missing[k][m] = reason
    bar.finish()
    # a probe metric no modality can have (no labels anywhere) gets no matrix at all
    keep = [k for k in values if values[k] or k in ("pretext_loss", "refit_loss")
            or any(reason != NO_LABELS for reason in missing[k].values())]
    return {k: values[k] for k in keep}, {k: missing[k] for k in keep if missing[k]}


def _score(ctx: RunContext, modality: str, head: torch.nn.Module, max_batches: int) -> float:
    return pretext_loss(ctx, modality, max_batches=max_batches, head=head)


class _Progress:
    """The evaluation's progress on rank 0: one part per held-out batch of the pretext losses, one
    per modality's probe (:func:`medkit.api.progress.work_reporter`: the run's bar, or a line every
    few seconds with the rate and the time left)."""

    def __init__(self, ctx: RunContext, pretext: list[str], probed: list[str], max_batches: int,
                 refitted: list[str] | None = None) -> None:
        bs = max(1, ctx.batch_size)
        batches = sum(-(-min(len(ctx.val_indices[m]), max(1, max_batches) * bs) // bs) for m in pretext)
        refits = len(refitted or [])
        self.total, self.done = batches + len(probed) + refits, 0
        self.reporter: Reporter | None = None
        if ctx.rank == 0 and self.total:
            self.reporter = work_reporter(getattr(ctx, "reporter", None), "parts")
            self.reporter.start(self.total, f"evaluation after stage {ctx.stage_index + 1} ({batches} held-out "
                                            f"batches, {refits} decoder refits, {len(probed)} probes)")

    def step(self) -> None:
        self.done += 1
        if self.reporter is not None:
            self.reporter.update(min(self.done, self.total), {})

    def finish(self) -> None:
        if self.reporter is not None:
            self.reporter.finish()
            self.reporter = None


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
                   not_evaluated: Mapping[str, str] | None = None,
                   make_head: HeadFactory | None = None) -> dict[str, Any]:
    """The evaluation record of the stage just finished (``ctx.stage_index``), ready for
    ``eval.json``: ``{"after_stage": ctx.stage_index + 1, "modalities", "metrics", "unavailable"}``.

    Args:
        ctx: the run context after the stage's training.
        strategy: the run's strategy (its ``eval_context`` wraps each modality).
        eval_batches: held-out batches per modality for the pretext loss (``trainer.eval_batches``).
        probes: the probes' options (``trainer.probe_*``: :meth:`ProbeOptions.from_trainer`).
        not_evaluated: ``{modality: reason}`` of modalities not to evaluate (added to
            ``ctx.not_evaluated``).
        make_head: builds a fresh pretext head of a modality, for the refitted-decoder loss
            (``None``: that metric is not computed).
    """
    counts: dict[str, dict[str, int]] = {}
    chance: dict[str, dict[str, float]] = {}
    try:
        values, missing = evaluate_cells(ctx, strategy, max_batches=int(eval_batches), options=probes,
                                         not_evaluated=not_evaluated, counts=counts, make_head=make_head,
                                         chance=chance)
    finally:
        cache = getattr(ctx, "feature_cache", None)
        if cache is not None:  # the rows kept for the probes are read: free them
            cache.clear()
    return evaluation_record(ctx.stage_index, list(ctx.stage), values, missing, counts, chance=chance)
