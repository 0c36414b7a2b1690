"""The pictures of a run: stage-matrix heat maps and training-loss curves (matplotlib Agg, no pyplot).

Rules every heat map follows: one panel per metric; a cell's colour is its change from the column's
reference cell (outlined: the value right after the modality's own stage, else the first value), on a
fixed scale per metric (:data:`FULL_SCALE`), never stretched to the data's span, so a difference below
:data:`NO_CHANGE` is drawn as "no meaningful change" (grey) however the values sit; red is worse,
blue is better; the span of every column and the unit are written on the figure; a probe cell says
how many held-out queries it rests on (``n=``); cells without a value say ``n/a`` (could not be
evaluated) or ``–`` (not evaluated at that stage).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medkit.eval.matrices import NOT_AVAILABLE, Matrix
from medkit.eval.metric_info import column_units, metric_info
from medkit.storage.files import atomic_write_bytes

NOT_EVALUATED_MARK = "–"
FOOTNOTE = (f"{NOT_AVAILABLE}: could not be evaluated (reason in eval.json / report.md)   "
            f"{NOT_EVALUATED_MARK}: not evaluated at that stage   outlined: reference cell   "
            "n: held-out queries of a probe cell")
#: Diverging, reversed: 0 (worse) is red, 0.5 (no meaningful change) grey, 1 (better) blue.
CMAP = "coolwarm_r"
#: A change below this is "no meaningful change": absolute for a metric with a fixed range
#: (accuracy, 0.01 = one point), relative to the reference value otherwise (a loss, 0.01 = 1 %).
NO_CHANGE = {"absolute": 0.01, "relative": 0.01}
#: The change at which the colour is fully red / blue (larger changes keep the end colour).
FULL_SCALE = {"absolute": 0.25, "relative": 0.25}


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` on an Agg canvas (no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def fmt_cell(value: float, decimals: int = 3) -> str:
    return f"{value:.{decimals}f}" if abs(value) < 100 else f"{value:.4g}"


def cell_decimals(column: np.ndarray) -> int:
    """3 decimals, more (at most 6) when that is what tells the column's different values apart."""
    values = sorted({float(v) for v in column if np.isfinite(v)})
    for d in range(3, 7):
        if len({round(v, d) for v in values}) == len(values):
            return d
    return 6


def text_colour(rgba: Sequence[float]) -> str:
    """Black or white, whichever contrasts more with the cell's own colour (WCAG relative luminance)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "black" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "white"


def change_kind(metric: str) -> str:
    """``"absolute"`` for a metric with a fixed range (an accuracy), ``"relative"`` otherwise (a loss)."""
    return "absolute" if metric_info(metric).value_range is not None else "relative"


def reference_rows(matrix: Matrix, data: np.ndarray) -> list[int | None]:
    """Per column, the row of its reference cell: right after the modality's own stage when that row
    has a value, else the column's first value (``None`` for a column without any)."""
    from medkit.eval.metrics import own_stages

    own = own_stages(matrix.modalities, matrix.stages)
    out: list[int | None] = []
    for j, m in enumerate(matrix.modalities):
        finite = [i for i in range(data.shape[0]) if np.isfinite(data[i, j])]
        i = own.get(m)
        out.append(i if i is not None and i in finite else (finite[0] if finite else None))
    return out


def colour_scale(matrix: Matrix, data: np.ndarray) -> tuple[np.ndarray, list[int | None], dict[str, Any]]:
    """Colour positions in [0, 1] of every cell (0.5 = no meaningful change, 1 = better by
    :data:`FULL_SCALE` or more), the reference row of each column and how the colour bar reads them.

    The position depends only on the cell's change from its reference, through a fixed scale: two
    matrices whose values differ by less than the threshold get the same colours.
    """
    info = metric_info(matrix.metric)
    kind = change_kind(matrix.metric)
    threshold, full = NO_CHANGE[kind], FULL_SCALE[kind]
    refs = reference_rows(matrix, data)
    pos = np.full(data.shape, np.nan)
    for j, r in enumerate(refs):
        if r is None:
            continue
        ref = float(data[r, j])
        for i in range(data.shape[0]):
            if not np.isfinite(data[i, j]):
                continue
            delta = float(data[i, j]) - ref
            if kind == "relative":
                delta = delta / abs(ref) if ref != 0 else (0.0 if delta == 0 else np.sign(delta) * np.inf)
            good = delta if info.higher_is_better else -delta
            pos[i, j] = 0.5 if abs(good) < threshold else 0.5 + 0.5 * float(np.clip(good / full, -1.0, 1.0))
    amount = (lambda v: f"{v:.0%}") if kind == "relative" else (lambda v: f"{v:g}")
    labels = [f"{amount(full)} worse\nor more", f"{amount(full / 2)} worse",
              f"no meaningful\nchange (< {amount(threshold)})", f"{amount(full / 2)} better",
              f"{amount(full)} better\nor more"]
    what = "relative to the reference value" if kind == "relative" else f"absolute ({info.unit})"
    bar = {"ticks": [0.0, 0.25, 0.5, 0.75, 1.0], "labels": labels, "threshold": threshold, "kind": kind,
           "label": f"change from the outlined reference cell,\n{what}; fixed scale"}
    return pos, refs, bar


def draw_heatmap(fig: Any, ax: Any, matrix: Matrix, *, objectives: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One matrix as an annotated heat map on ``ax``; returns the colour bar's ticks and labels."""
    import matplotlib
    from matplotlib.patches import Rectangle

    info = metric_info(matrix.metric)
    data = np.array([[np.nan if v is None else v for v in r] for r in matrix.rows],
                    dtype=float).reshape(len(matrix.rows), len(matrix.modalities))  # [stages, modalities]
    units = column_units(matrix.metric, matrix.modalities, objectives)
    pos, refs, bar = colour_scale(matrix, data)
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(pos), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    decimals = [cell_decimals(data[:, j]) for j in range(data.shape[1])]
    counts = getattr(matrix, "counts", None) or []
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                n = counts[i][j] if i < len(counts) and j < len(counts[i]) else None
                text = fmt_cell(data[i, j], decimals[j]) + (f"\nn={n}" if n is not None else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if n is None else 7,
                        color=text_colour(cmap(float(pos[i, j]))))
            else:
                na = matrix.na[i][j] if i < len(matrix.na) else False
                ax.text(j, i, NOT_AVAILABLE if na else NOT_EVALUATED_MARK, ha="center", va="center",
                        fontsize=8, color="0.2" if na else "0.45", style="italic" if na else "normal")
    for j, r in enumerate(refs):
        if r is not None:
            ax.add_patch(Rectangle((j - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.4))
    columns = [(f"{m}\n{units[m]}" if info.per_objective else m) + f"\n{_span(data[:, j], bar)}"
               for j, m in enumerate(matrix.modalities)]
    ax.set_xticks(range(len(matrix.modalities)), columns, fontsize=8)
    ax.set_yticks(range(len(matrix.rows)), matrix.row_labels(), fontsize=8)
    ax.set_xlabel(f"evaluated modality ({info.split})", fontsize=8)
    ax.set_title(f"{info.title} ({info.better})", fontsize=10)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    colorbar.set_ticks(bar["ticks"], labels=bar["labels"], fontsize=6.5)
    colorbar.set_label(bar["label"], fontsize=7)
    return bar


def _span(column: np.ndarray, bar: Mapping[str, Any] | None = None) -> str:
    """``span 7e-05`` (max − min of the column), with ``no meaningful change`` when the span is
    below the scale's threshold (relative to the column's smallest magnitude for a relative scale)."""
    values = column[np.isfinite(column)]
    if values.size == 0:
        return NOT_AVAILABLE
    span = float(values.max() - values.min())
    if span == 0:
        return "one value" if values.size == 1 else "no change"
    text = f"span {span:.2g}"
    if bar is not None:
        scale = float(np.abs(values).min()) if bar["kind"] == "relative" else 1.0
        if span < bar["threshold"] * scale:
            text += "\nno meaningful change"
    return text


def heatmap_figure(matrices: Sequence[Matrix], *, objectives: Mapping[str, str] | None = None,
                   title: str | None = None) -> Any:
    """One panel per matrix (stacked), each with its own colour scale, and the cell legend."""
    matrices = list(matrices)
    label_len = max([len(s) for m in matrices for s in m.row_labels()] + [10])
    cols = max([len(m.modalities) for m in matrices] + [1])
    heights = [1.3 + 0.45 * max(len(m.rows), 1) for m in matrices] or [1.5]
    fig = new_figure(2.6 + 0.07 * label_len + 1.9 * cols, sum(heights) + 0.55 + (0.3 if title else 0))
    for k, matrix in enumerate(matrices):
        ax = fig.add_subplot(len(matrices), 1, k + 1)
        draw_heatmap(fig, ax, matrix, objectives=objectives)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.text(0.01, 0.005, FOOTNOTE, fontsize=6.5, color="0.3", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.035, 1, 0.97 if title else 1))
    return fig


def heatmap_png(path: Path, matrices: Matrix | Sequence[Matrix], *, objectives: Mapping[str, str] | None = None,
                title: str | None = None) -> Path:
    """Write :func:`heatmap_figure` of one or several matrices to ``path``."""
    items = [matrices] if isinstance(matrices, Matrix) else list(matrices)
    return save_png(heatmap_figure(items, objectives=objectives, title=title), path)


# -- loss curves (their own module; re-exported here, where callers have always found them) -----
from medkit.eval.loss_plot import loss_curves_figure, loss_curves_png  # noqa: E402  (after the helpers it uses)

__all__ = ["colour_scale", "draw_heatmap", "heatmap_figure", "heatmap_png", "loss_curves_figure",
           "loss_curves_png", "new_figure", "save_png", "text_colour"]
