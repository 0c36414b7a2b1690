"""Continual-learning metrics of a stage × modality matrix: forgetting, BWT, FWT (docs/continual-metrics.md).

A matrix ``R`` has one row per finished stage ``i = 1..T`` and one column per modality ``j``;
``R[i][j]`` is the value of modality ``j`` after stage ``i`` (``None`` when not evaluated). A
modality's own stage ``s(j)`` is the first stage that trained it (stages may train several
modalities). Every metric is oriented so that **positive forgetting = worse** and **positive
BWT/FWT = better**, whichever way the metric points: for a lower-is-better metric (a loss) the
differences are negated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

Row = Sequence[float | None]

#: metric name -> True when higher values are better
HIGHER_IS_BETTER = {"pretext_loss": False, "knn_acc": True, "linear_acc": True}


@dataclass
class CLMetrics:
    """Summary of one matrix. A ``None`` metric has its reason in ``reasons``."""

    metric: str
    higher_is_better: bool
    stages: int
    final: dict[str, float | None] = field(default_factory=dict)
    final_mean: float | None = None
    forgetting_first: float | None = None
    forgetting_max: float | None = None
    forgetting_first_per: dict[str, float] = field(default_factory=dict)
    forgetting_max_per: dict[str, float] = field(default_factory=dict)
    bwt: float | None = None
    fwt: float | None = None
    fwt_baseline: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def own_stages(modalities: Sequence[str], stage_modalities: Sequence[Sequence[str]]) -> dict[str, int]:
    """0-based index of the first stage that trained each modality (modalities never trained are left out)."""
    out: dict[str, int] = {}
    for i, mods in enumerate(stage_modalities):
        for m in mods:
            if m in modalities and m not in out:
                out[m] = i
    return out


def continual_metrics(metric: str, modalities: Sequence[str], stage_modalities: Sequence[Sequence[str]],
                      rows: Sequence[Row], *, higher_is_better: bool | None = None,
                      baseline: dict[str, float] | None = None, baseline_name: str | None = None) -> CLMetrics:
    """Forgetting (first- and max-value), BWT and FWT of one matrix.

    Args:
        metric: the matrix's metric name (sets the orientation unless ``higher_is_better`` is given).
        modalities: column names; stage_modalities: the modalities of each row's stage; rows: ``R``.
        baseline: ``b_j`` per modality, the value of an untrained encoder (e.g. the last row of a
            ``tfs`` run); without it FWT omits ``b_j`` (``b_j = 0``) and ``fwt_baseline`` says so.
    """
    hib = HIGHER_IS_BETTER.get(metric, True) if higher_is_better is None else higher_is_better
    sign = 1.0 if hib else -1.0
    T = len(rows)
    col = {m: j for j, m in enumerate(modalities)}
    out = CLMetrics(metric=metric, higher_is_better=hib, stages=T)
    if T == 0:
        out.reasons = {k: "the matrix has no rows" for k in ("forgetting", "bwt", "fwt", "final")}
        return out
    last = rows[-1]
    out.final = {m: last[col[m]] for m in modalities}
    out.final_mean = _mean([v for v in out.final.values() if v is not None and not math.isnan(v)])
    own = own_stages(modalities, stage_modalities)

    # forgetting / BWT over modalities trained before the last stage
    earlier = [m for m in modalities if m in own and own[m] < T - 1]
    if T < 2:
        reason = "one stage only (e.g. joint): there is no later stage to forget in"
        out.reasons.update(forgetting=reason, bwt=reason, fwt=reason)
        return out
    if not earlier:
        out.reasons.update(forgetting="no modality was trained before the last stage",
                           bwt="no modality was trained before the last stage")
    for m in earlier:
        j, s = col[m], own[m]
        history = [rows[i][j] for i in range(s, T - 1) if rows[i][j] is not None]
        if rows[s][j] is None or last[j] is None:
            continue
        best = max(history) if hib else min(history)
        out.forgetting_first_per[m] = sign * (rows[s][j] - last[j])
        out.forgetting_max_per[m] = sign * (best - last[j])
    if earlier and not out.forgetting_first_per:
        out.reasons.update(forgetting="R[s(j), j] or R[T, j] missing for every earlier modality",
                           bwt="R[s(j), j] or R[T, j] missing for every earlier modality")
    out.forgetting_first = _mean(list(out.forgetting_first_per.values()))
    out.forgetting_max = _mean(list(out.forgetting_max_per.values()))
    out.bwt = None if out.forgetting_first is None else -out.forgetting_first

    # FWT over modalities whose own stage is not the first: value just before their stage
    later = [m for m in modalities if m in own and own[m] >= 1]
    gains, evaluated = [], 0
    for m in later:
        before = rows[own[m] - 1][col[m]]
        if before is None:
            continue
        evaluated += 1
        if baseline is not None and baseline.get(m) is None:
            continue
        b = 0.0 if baseline is None else float(baseline[m])
        gains.append(sign * (before - b))
    out.fwt = _mean(gains)
    if out.fwt is not None:
        out.fwt_baseline = baseline_name or ("given" if baseline is not None else
                                             "none: b_j omitted (b_j = 0), FWT is the mean value before training")
    elif not later:
        out.reasons["fwt"] = "no modality has a stage of its own after the first"
    elif not evaluated:
        out.reasons["fwt"] = ("no modality was evaluated before its own stage (this metric is only "
                              "evaluated on seen modalities)")
    else:
        out.reasons["fwt"] = "the baseline has no value for the modalities of later stages"
    return out


def baseline_from_rows(modalities: Sequence[str], rows: Sequence[Row]) -> dict[str, float]:
    """``b_j`` from an untrained run's matrix (``tfs``): the last evaluated value of each column."""
    out: dict[str, float] = {}
    for j, m in enumerate(modalities):
        for row in reversed(rows):
            if row[j] is not None:
                out[m] = float(row[j])
                break
    return out


def run_metrics(run_dir: Path, *, baseline_run: Path | None = None) -> dict[str, CLMetrics]:
    """:class:`CLMetrics` of every ``metrics/matrix*.csv`` of a run, keyed by metric name."""
    from medkit.eval.evaluate import read_matrix_stages

    out: dict[str, CLMetrics] = {}
    for metric, path in matrix_files(Path(run_dir)).items():
        mods, stages, rows = read_matrix_stages(path)
        base = None
        if baseline_run is not None:
            bpath = matrix_files(Path(baseline_run)).get(metric)
            if bpath is not None:
                bmods, _, brows = read_matrix_stages(bpath)
                base = baseline_from_rows(bmods, brows)
        out[metric] = continual_metrics(metric, mods, stages, rows, baseline=base,
                                        baseline_name=None if base is None else f"{baseline_run}")
    return out


def matrix_files(run_dir: Path) -> dict[str, Path]:
    """``{metric: path}`` of the matrices a run wrote (``matrix.csv`` is ``pretext_loss``)."""
    from medkit.eval.evaluate import MATRIX_FILES

    metrics = Path(run_dir) / "metrics"
    named = {file: metric for metric, file in MATRIX_FILES.items()}
    out = {}
    for path in sorted(metrics.glob("matrix*.csv")):
        metric = named.get(path.name, path.stem[len("matrix_"):])
        if metric:
            out[metric] = path
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "pretext_loss", kv[0])))
