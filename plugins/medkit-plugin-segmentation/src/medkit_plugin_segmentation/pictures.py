"""Overlays of prediction vs ground truth (supplement E); 3D volumes show their middle slice."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medkit.api import atomic_write_bytes

#: Class 1 red, class 2 green (supplement E: organs red, tumours green), then blue, yellow, ...
COLOURS = np.array([[0, 0, 0], [230, 40, 40], [40, 200, 60], [50, 90, 230], [240, 200, 30],
                    [200, 60, 220], [30, 200, 210]], dtype=np.float32) / 255.0


def middle_slice(x: np.ndarray) -> np.ndarray:
    """``[*S]`` → a 2D ``[H, W]`` view: itself in 2D, the middle of the first axis in 3D."""
    return x if x.ndim == 2 else x[x.shape[0] // 2]


def metrics_title(metrics: dict[str, float], split: str, *, three_d: bool = False) -> str:
    """The overlay figure's title: mean Dice and HD95 over the classes and, where the classes' values
    differ, one more line per metric with each class's own (a mean HD95 of 134.5 driven by one
    class says which)."""
    lines = [f"{split} split: Dice {metrics['dice']:.3f}  HD95 {metrics['hd95']:.2f} voxels"
             + (" (middle slice shown)" if three_d else "")]
    for key, label, fmt in (("dice", "Dice", ".3f"), ("hd95", "HD95", ".2f")):
        per = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{key}/")}
        if len(per) > 1 and len({f"{v:{fmt}}" for v in per.values()}) > 1:
            lines.append(f"{label} per class (the line above is their mean): "
                         + ", ".join(f"{n} {v:{fmt}}" for n, v in per.items()))
    return "\n".join(lines)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB ``[H, W, 3]`` in [0, 1]: the grey image with every class > 0 tinted by its colour."""
    low, high = float(image.min()), float(image.max())
    grey = (image - low) / max(high - low, 1e-8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colours = COLOURS[np.clip(labels, 0, len(COLOURS) - 1)]
    fg = (labels > 0)[..., None]
    return np.where(fg, (1 - alpha) * rgb + alpha * colours, rgb)


def overlays_png(examples: Sequence[dict[str, Any]], class_names: Sequence[str], path: Path, *,
                 title: str = "") -> Path:
    """One row per example: image, ground truth overlay, prediction overlay."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = max(1, len(examples))
    fig = Figure(figsize=(7.5, 3.0 * rows + 0.8), dpi=100)
    FigureCanvasAgg(fig)
    for r, ex in enumerate(examples):
        image, gt, pred = (middle_slice(np.asarray(ex[k])) for k in ("image", "gt", "pred"))
        panels = [(np.repeat(((image - image.min()) / max(float(np.ptp(image)), 1e-8))[..., None], 3, -1), "image"),
                  (overlay(image, gt), "ground truth"), (overlay(image, pred), "prediction")]
        for c, (rgb, label) in enumerate(panels):
            ax = fig.add_subplot(rows, 3, r * 3 + c + 1)
            ax.imshow(rgb, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{label}" + (f"\n{ex['id']}" if c == 0 else ""), fontsize=8)
    handles = [Patch(color=COLOURS[min(i, len(COLOURS) - 1)], label=n) for i, n in enumerate(class_names) if i > 0]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1 - 0.22 / (3.0 * rows + 0.8) * (title.count("\n") + 1)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
