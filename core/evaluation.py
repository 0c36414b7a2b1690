"""Held-out evaluation after each stage and the modality × stage matrices."""

from __future__ import annotations

import csv
import io
import zlib
from pathlib import Path
from typing import Any, Sequence

import torch

from medkit.core.checkpoint import atomic_write_text
from medkit.core.context import RunContext

MATRIX_FILES = {"pretext_loss": "matrix.csv"}


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


def evaluate_seen(ctx: RunContext, strategy: Any, *, max_batches: int) -> dict[str, dict[str, float]]:
    """``{metric: {modality: value}}`` for every modality seen so far."""
    out: dict[str, dict[str, float]] = {"pretext_loss": {}}
    for m in ctx.seen:
        with strategy.eval_context(ctx, m):
            out["pretext_loss"][m] = pretext_loss(ctx, m, max_batches=max_batches)
    return out


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
