"""The confusion-matrix picture of a classification evaluation (matplotlib, Agg canvas)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from medkit.storage.files import atomic_write_bytes


def confusion_png(cm: np.ndarray, class_names: Sequence[str], path: Path, *, title: str = "") -> Path:
    """Write a confusion matrix (rows: true class, columns: predicted; counts and row fractions)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(class_names)
    size = max(3.5, 0.6 * n + 2.0)
    fig = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, np.maximum(rows, 1), dtype=np.float64)
    ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
