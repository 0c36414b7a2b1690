"""The confusion-matrix picture of a classification evaluation (matplotlib, Agg canvas)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from medkit.api import atomic_write_bytes


def confusion_png(cm: np.ndarray, class_names: Sequence[str], path: Path, *, title: str = "",
                  split: str = "evaluation") -> Path:
    """Write a confusion matrix of the ``split`` split (rows: true class, columns: predicted; cells:
    sample counts, coloured by the fraction of the true class's row)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(class_names)
    size = max(4.2, 0.6 * n + 2.6)
    fig = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, np.maximum(rows, 1), dtype=np.float64)
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(f"{title or 'confusion matrix'}\n{split} split, {int(cm.sum())} samples (cells: counts)", fontsize=9)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("fraction of the true class", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
