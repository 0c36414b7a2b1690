"""The training-loss picture: pretext losses and a strategy's own losses (distillation...) on separate,
correctly labelled axes, legends outside the data, single-step series drawn as markers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from medkit.eval.metric_info import OBJECTIVE_UNITS, objective_unit

#: A strategy's own loss terms as the step log names them (a step row's metric keys) and what they are.
STRATEGY_TERMS = {
    "distill": "feature distillation loss\n(MSE to the frozen teacher's features)",
    "cassle": "CaSSLe distillation loss\n(predicted vs. teacher features)",
    "ewc": "EWC penalty (Fisher-weighted\nsquared parameter change)",
}
#: The axis of a buffer step whose row names neither its objective nor a known strategy term.
BUFFER_LOSS = "loss of rehearsal-buffer batches\n(the strategy's own)"
UNKNOWN = "training loss (each modality's own objective)"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def loss_parts(row: Mapping[str, Any], objective: str | None) -> list[tuple[str, float]]:
    """The ``(kind, value)`` losses one step row holds: ``("pretext", v)`` when the row carries its
    objective's own metric (``mae``, ``mlm``), one entry per strategy term (``("distill", v)``...),
    and else the row's total ``loss`` as ``"pretext"`` (a current-data step) or ``"buffer"``."""
    keys = [objective] if objective else list(OBJECTIVE_UNITS)
    parts = [("pretext", float(row[k])) for k in keys if k and _finite(row.get(k))][:1]
    parts += [(term, float(row[term])) for term in STRATEGY_TERMS if _finite(row.get(term))]
    if not parts:
        role = str(row.get("role", "current"))
        parts = [("pretext" if role == "current" else "buffer", float(row["loss"]))]
    return parts


def _smooth(ys: Sequence[float], window: int) -> list[float]:
    return [sum(ys[max(0, k - window + 1):k + 1]) / len(ys[max(0, k - window + 1):k + 1]) for k in range(len(ys))]


def _axis_name(kind: str, modality: str, objectives: Mapping[str, str] | None) -> str:
    if kind == "pretext":
        return objective_unit(objectives.get(modality)) if objectives else UNKNOWN
    return STRATEGY_TERMS.get(kind, BUFFER_LOSS)


def loss_curves_figure(steps: Sequence[Mapping[str, Any]], *, objectives: Mapping[str, str] | None = None,
                       window: int = 5) -> tuple[Any, dict[str, str]]:
    """Training loss over all steps (stages laid end to end), one colour per modality, solid for the
    current stage's data and dashed for rehearsed (buffer) data; one panel per kind of loss (each
    pretext objective's unit, and each strategy term such as distillation on its own axis); a series
    of one step is drawn as a marker; legends sit right of the panels; grey lines mark stage ends.

    Returns the figure and the line style of each series (``{"ct (buffer)": "--"}``; a strategy
    term's series is named ``"ct (buffer, distill)"``).
    """
    from medkit.eval.plots import new_figure

    last_step: dict[int, int] = {}
    for r in steps:
        last_step[int(r["stage"])] = max(last_step.get(int(r["stage"]), 0), int(r["step"]))
    offset, total = {}, 0
    for stage in sorted(last_step):
        offset[stage] = total
        total += last_step[stage]
    series: dict[tuple[str, str, str], tuple[list[int], list[float]]] = {}
    for r in steps:
        m, role = str(r["modality"]), str(r.get("role", "current"))
        for kind, value in loss_parts(r, (objectives or {}).get(m)):
            xs, ys = series.setdefault((m, role, kind), ([], []))
            xs.append(offset[int(r["stage"])] + int(r["step"]))
            ys.append(value)
    mods = sorted({m for m, _, _ in series})
    axis_of = {key: _axis_name(key[2], key[0], objectives) for key in series}
    pretext = sorted({a for (m, r, k), a in axis_of.items() if k == "pretext"})
    others = sorted({a for (m, r, k), a in axis_of.items() if k != "pretext"})
    names = pretext + others or [UNKNOWN]
    fig = new_figure(10.5, 1.2 + 2.6 * len(names))
    fig.set_layout_engine("constrained")
    axes = [fig.add_subplot(len(names), 1, 1)]
    axes += [fig.add_subplot(len(names), 1, k + 1, sharex=axes[0]) for k in range(1, len(names))]
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    colours = {m: f"C{k % 10}" for k, m in enumerate(mods)}
    styles: dict[str, str] = {}
    for (m, role, kind), (xs, ys) in sorted(series.items()):
        key = f"{m} ({role})" if kind in ("pretext", "buffer") else f"{m} ({role}, {kind})"
        styles[key] = "-" if role == "current" else "--"
        ax = axes[names.index(axis_of[(m, role, kind)])]
        single = len(xs) == 1  # one step: a line of one point draws nothing, so draw the point
        ax.plot(xs, _smooth(ys, window), color=colours[m], linestyle=styles[key], linewidth=1.2,
                marker="o" if single else None, markersize=5, label=key + (" (1 step)" if single else ""))
    buffered = any(role != "current" for _, role, _ in series)
    for k, (ax, name) in enumerate(zip(axes, names)):
        for stage in sorted(offset)[1:]:
            ax.axvline(offset[stage] + 0.5, color="0.7", linewidth=0.8)
        if k == 0:  # name each stage over its segment (a --from run starts at a later stage)
            for stage in sorted(offset):
                ax.text(offset[stage] + 0.5 + last_step[stage] / 2, 1.0, f"stage {stage}", fontsize=7,
                        ha="center", va="bottom", color="0.4", transform=ax.get_xaxis_transform())
        ax.set_ylabel(f"{name}\n(moving mean of {window})", fontsize=8)
        if ax.lines and any(line.get_label()[:1] != "_" for line in ax.lines):
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    axes[-1].set_xlabel("optimizer step (this run's stages end to end; grey lines: stage ends)")
    title = "training loss per modality, on training batches"
    axes[0].set_title(title + (" (dashed: rehearsal-buffer batches)" if buffered else ""), fontsize=10, pad=14)
    return fig, styles


def loss_curves_png(path: Path, steps: Sequence[Mapping[str, Any]], *,
                    objectives: Mapping[str, str] | None = None, window: int = 5) -> dict[str, str]:
    """Write :func:`loss_curves_figure` to ``path``; returns the line styles."""
    from medkit.eval.plots import save_png

    fig, styles = loss_curves_figure(steps, objectives=objectives, window=window)
    save_png(fig, path)
    return styles
