"""The pictures of a run: stage-matrix heat maps and training-loss curves (matplotlib Agg, no pyplot).

Rules every figure follows: one panel per metric, each with its own colour scale; a loss whose
columns are different objectives is coloured per column (labelled so); brighter is always better;
the split and the unit are written on the figure; cells without a value say ``n/a`` (could not be
evaluated) or ``–`` (not evaluated at that stage); a colour bar over one single value shows that
value, not a span of 1e-9.
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
            f"{NOT_EVALUATED_MARK}: not evaluated at that stage   brighter = better")
CMAP = "viridis"


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


def _decimals(values: Sequence[float], span: float) -> int:
    """The fewest decimals (at most 6) that write every tick value exactly (to 1e-6 of the span)."""
    for d in range(0, 7):
        if all(abs(round(v, d) - v) <= 1e-6 * span for v in values):
            return d
    return 6


def colour_scale(matrix: Matrix, data: np.ndarray, per_column: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Colour positions in [0, 1] (1 = best) of every cell and how the colour bar reads them."""
    info = metric_info(matrix.metric)
    finite = np.isfinite(data)
    pos = np.full(data.shape, np.nan)
    if per_column:
        for j in range(data.shape[1]):
            col = data[finite[:, j], j]
            if col.size == 0:
                continue
            lo, hi = float(col.min()), float(col.max())
            span = hi - lo
            rel = (data[:, j] - lo) / span if span > 0 else np.where(finite[:, j], 0.5, np.nan)
            pos[:, j] = rel if info.higher_is_better else 1.0 - rel
        return pos, {"ticks": [0.0, 1.0], "labels": ["worst in\ncolumn", "best in\ncolumn"],
                     "label": "colour scaled per column\n(each modality's own loss)"}
    if info.value_range is not None:
        lo, hi = info.value_range
    elif finite.any():
        lo, hi = float(data[finite].min()), float(data[finite].max())
    else:
        lo, hi = 0.0, 1.0
    unit = column_units(matrix.metric, matrix.modalities, None)[matrix.modalities[0]] if matrix.modalities else ""
    bar: dict[str, Any] = {"label": f"{info.title} ({unit})"}
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):  # one value: colour it mid-scale, show the value itself
        pos[finite] = 0.5
        bar.update(ticks=[0.5], labels=[f"{lo:.4g}"], label=bar["label"] + "\nall cells equal")
        return pos, bar
    rel = (data - lo) / (hi - lo)
    pos = rel if info.higher_is_better else 1.0 - rel
    from matplotlib.ticker import MaxNLocator

    span = hi - lo
    values = [float(v) for v in MaxNLocator(5).tick_values(lo, hi) if lo - 1e-9 * span <= v <= hi + 1e-9 * span]
    d = _decimals(values, span)  # nice ticks (0.62, 0.64, ...) with just the decimals they need
    bar["ticks"] = [float((v - lo) / (hi - lo)) if info.higher_is_better else float(1 - (v - lo) / (hi - lo))
                    for v in values]
    bar["labels"] = [f"{v:.{d}f}" for v in values]
    return pos, bar


def draw_heatmap(fig: Any, ax: Any, matrix: Matrix, *, objectives: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One matrix as an annotated heat map on ``ax``; returns the colour bar's ticks and labels."""
    import matplotlib

    info = metric_info(matrix.metric)
    data = np.array([[np.nan if v is None else v for v in r] for r in matrix.rows],
                    dtype=float).reshape(len(matrix.rows), len(matrix.modalities))  # [stages, modalities]
    units = column_units(matrix.metric, matrix.modalities, objectives)
    per_column = info.per_objective and len(matrix.modalities) > 1
    pos, bar = colour_scale(matrix, data, per_column)
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad="0.93")
    image = ax.imshow(np.ma.masked_invalid(pos), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    decimals = [cell_decimals(data[:, j]) for j in range(data.shape[1])]
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                ax.text(j, i, fmt_cell(data[i, j], decimals[j]), ha="center", va="center", fontsize=8,
                        color=text_colour(cmap(float(pos[i, j]))))
            else:
                na = matrix.na[i][j] if i < len(matrix.na) else False
                ax.text(j, i, NOT_AVAILABLE if na else NOT_EVALUATED_MARK, ha="center", va="center",
                        fontsize=8, color="0.2" if na else "0.45", style="italic" if na else "normal")
    columns = [f"{m}\n{units[m]}" + (f"\n{_span(data[:, j])}" if per_column else "")
               if info.per_objective else m for j, m in enumerate(matrix.modalities)]
    ax.set_xticks(range(len(matrix.modalities)), columns, fontsize=8)
    ax.set_yticks(range(len(matrix.rows)), matrix.row_labels(), fontsize=8)
    ax.set_xlabel(f"evaluated modality ({info.split})", fontsize=8)
    ax.set_title(f"{info.title} ({info.better})", fontsize=10)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    colorbar.set_ticks(bar["ticks"], labels=bar["labels"], fontsize=7)
    colorbar.set_label(bar["label"], fontsize=7)
    return bar


def _span(column: np.ndarray) -> str:
    values = column[np.isfinite(column)]
    if values.size == 0:
        return NOT_AVAILABLE
    span = float(values.max() - values.min())
    return ("one value" if values.size == 1 else "no change") if span == 0 else f"span {span:.2g}"


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


# -- loss curves --------------------------------------------------------------------------------
def _smooth(ys: Sequence[float], window: int) -> list[float]:
    return [sum(ys[max(0, k - window + 1):k + 1]) / len(ys[max(0, k - window + 1):k + 1]) for k in range(len(ys))]


def loss_curves_figure(steps: Sequence[Mapping[str, Any]], *, objectives: Mapping[str, str] | None = None,
                       window: int = 5) -> tuple[Any, dict[str, str]]:
    """Training loss over all steps (stages laid end to end), one colour per modality, solid for
    the current stage's data and dashed for rehearsed (buffer) data; one panel per loss unit
    (modalities of different objectives never share a y axis); grey lines mark stage ends.

    Returns the figure and the line style of each series (``{"ct (buffer)": "--"}``).
    """
    from medkit.eval.metric_info import objective_unit

    last_step: dict[int, int] = {}
    for r in steps:
        last_step[int(r["stage"])] = max(last_step.get(int(r["stage"]), 0), int(r["step"]))
    offset, total = {}, 0
    for stage in sorted(last_step):
        offset[stage] = total
        total += last_step[stage]
    series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for r in steps:
        xs, ys = series.setdefault((str(r["modality"]), str(r.get("role", "current"))), ([], []))
        xs.append(offset[int(r["stage"])] + int(r["step"]))
        ys.append(float(r["loss"]))
    mods = sorted({m for m, _ in series})
    from matplotlib.ticker import MaxNLocator

    unknown = "training loss (each modality's own objective)"
    unit_of = {m: objective_unit((objectives or {}).get(m)) if objectives else unknown for m in mods}
    units = sorted(set(unit_of.values())) or [unknown]
    fig = new_figure(9.0, 1.2 + 2.8 * len(units))
    axes = [fig.add_subplot(len(units), 1, 1)]
    axes += [fig.add_subplot(len(units), 1, k + 1, sharex=axes[0]) for k in range(1, len(units))]
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    colours = {m: f"C{k % 10}" for k, m in enumerate(mods)}
    styles: dict[str, str] = {}
    for (m, role), (xs, ys) in sorted(series.items()):
        key = f"{m} ({role})"
        styles[key] = "-" if role == "current" else "--"
        ax = axes[units.index(unit_of[m])]
        ax.plot(xs, _smooth(ys, window), color=colours[m], linestyle=styles[key], linewidth=1.2, label=key)
    buffered = any(role != "current" for _, role in series)
    for k, (ax, unit) in enumerate(zip(axes, units)):
        for stage in sorted(offset)[1:]:
            ax.axvline(offset[stage] + 0.5, color="0.7", linewidth=0.8)
        if k == 0:  # name each stage over its segment (a --from run starts at a later stage)
            for stage in sorted(offset):
                ax.text(offset[stage] + 0.5 + last_step[stage] / 2, 1.0, f"stage {stage}", fontsize=7,
                        ha="center", va="bottom", color="0.4", transform=ax.get_xaxis_transform())
        ax.set_ylabel(f"{unit}\n(moving mean of {window})", fontsize=8)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("optimizer step (this run's stages end to end; grey lines: stage ends)")
    title = "training loss per modality, on training batches"
    axes[0].set_title(title + (" (dashed: rehearsal-buffer batches)" if buffered else ""), fontsize=10, pad=14)
    fig.tight_layout()
    return fig, styles


def loss_curves_png(path: Path, steps: Sequence[Mapping[str, Any]], *,
                    objectives: Mapping[str, str] | None = None, window: int = 5) -> dict[str, str]:
    """Write :func:`loss_curves_figure` to ``path``; returns the line styles."""
    fig, styles = loss_curves_figure(steps, objectives=objectives, window=window)
    save_png(fig, path)
    return styles
