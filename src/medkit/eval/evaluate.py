"""Held-out evaluation after each stage and the modality × stage matrices."""

from __future__ import annotations

import csv
import io
import logging
import zlib
from pathlib import Path
from typing import Any, Sequence

import torch

from medkit.storage.files import atomic_write_text
from medkit.api.context import RunContext
from medkit.eval.probes import probe_modality

log = logging.getLogger(__name__)

MATRIX_FILES = {"pretext_loss": "matrix.csv"}
#: trainer config keys -> evaluate_seen keywords (the probes' options)
PROBE_KEYS = {"probe_knn_k": "knn_k", "probe_linear_steps": "linear_steps", "probe_knn_vote": "knn_vote",
              "probe_unseen": "probe_unseen", "probe_max_train": "probe_max_train",
              "probe_max_query": "probe_max_query"}


def probe_options(trainer: dict[str, Any]) -> dict[str, Any]:
    """``evaluate_seen`` keywords from the ``trainer.probe_*`` keys present in a config."""
    return {kw: trainer[key] for key, kw in PROBE_KEYS.items() if key in trainer}


@torch.no_grad()
def pretext_loss(ctx: RunContext, modality: str, *, max_batches: int) -> float:
    """Mean held-out pretext loss of ``modality`` in eval mode with a fixed masking generator."""
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
        for k in range(0, len(indices), ctx.batch_size):
            batch = ctx.load_batch(modality, indices[k:k + ctx.batch_size])
            out = head(ctx.encoder, batch, generator=gen)
            total += float(out.loss) * len(batch)
            count += len(batch)
    finally:
        ctx.encoder.train(states[0])
        head.train(states[1])
    return total / max(count, 1)


def evaluate_seen(ctx: RunContext, strategy: Any, *, max_batches: int, knn_k: int = 5,
                  linear_steps: int = 100, knn_vote: str = "weighted", probe_unseen: bool = True,
                  probe_max_train: int = 512, probe_max_query: int = 256) -> dict[str, dict[str, float]]:
    """``{metric: {modality: value}}`` after a stage.

    ``pretext_loss`` for every modality seen so far; ``knn_acc`` and ``linear_acc`` (frozen-encoder
    probes, see :mod:`medkit.eval.probes`) for every labelled modality seen so far and, with
    ``probe_unseen``, also for the modalities of later stages (their values before training on them
    are what forward transfer needs). Each modality is evaluated inside ``strategy.eval_context``.
    A modality that cannot be probed (no labels, one class, too few samples) is skipped with one
    logged reason; ``knn_k <= 0`` and ``linear_steps <= 0`` turn the probes off. The probes' memory
    / training set is the modality's training split (at most ``probe_max_train`` labelled samples,
    an even stride), their queries its held-out split (at most ``probe_max_query``).
    """
    out: dict[str, dict[str, float]] = {"pretext_loss": {}, "knn_acc": {}, "linear_acc": {}}
    seen = ctx.seen
    probed = [] if knn_k <= 0 and linear_steps <= 0 else (list(ctx.modalities) if probe_unseen else seen)
    skipped = ctx.extras.setdefault("probe_skipped", {})
    for m in [*seen, *[p for p in probed if p not in seen]]:
        with strategy.eval_context(ctx, m):
            if m in seen:
                out["pretext_loss"][m] = pretext_loss(ctx, m, max_batches=max_batches)
            if m not in probed or m in skipped:
                continue
            values, reason = probe_modality(ctx, m, knn_k=knn_k, linear_steps=linear_steps,
                                            knn_vote=knn_vote, max_train=probe_max_train,
                                            max_query=probe_max_query)
        if reason is not None:
            skipped[m] = reason
            log.info("%s: no kNN/linear probe (%s)", m, reason)
            continue
        for metric, value in values.items():
            out[metric][m] = value
    return {k: v for k, v in out.items() if v or k == "pretext_loss"}


def matrix_csv(rows: Sequence[dict[str, Any]], modalities: Sequence[str], metric: str) -> str:
    """CSV text: one row per finished stage (``after_stage`` 1-based), one column per modality."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["after_stage", "stage_modalities", *modalities])
    for row in rows:
        values = row["metrics"].get(metric, {})
        writer.writerow([row["stage"] + 1, "+".join(row["modalities"]),
                         *[("" if m not in values else f"{values[m]:.6f}") for m in modalities]])
    return buf.getvalue()


def write_matrices(metrics_dir: Path, rows: Sequence[dict[str, Any]], modalities: Sequence[str]) -> None:
    metrics = sorted({k for row in rows for k in row["metrics"]})
    for metric in metrics:
        name = MATRIX_FILES.get(metric, f"matrix_{metric}.csv")
        atomic_write_text(Path(metrics_dir) / name, matrix_csv(rows, modalities, metric))


def read_matrix(path: Path) -> tuple[list[str], list[list[float | None]]]:
    """(modalities, rows) of a matrix CSV; missing entries are ``None``."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        mods = header[2:]
        rows = [[float(v) if v != "" else None for v in r[2:]] for r in reader]
    return mods, rows


def read_matrix_stages(path: Path) -> tuple[list[str], list[list[str]], list[list[float | None]]]:
    """(modalities, the modalities trained in each row's stage, rows) of a matrix CSV."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        body = list(reader)
    stages = [[m for m in r[1].split("+") if m] for r in body]
    rows = [[float(v) if v != "" else None for v in r[2:]] for r in body]
    return header[2:], stages, rows
