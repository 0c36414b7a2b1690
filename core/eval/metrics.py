"""Continual-learning metrics of a stage × modality matrix: forgetting, BWT, FWT (docs/continual-metrics.md).

A matrix ``R`` has one row per finished stage ``i = 1..T`` and one column per modality ``j``;
``R[i][j]`` is the value of modality ``j`` after stage ``i`` (``None`` when not evaluated). A
modality's own stage ``s(j)`` is the first stage that trained it (stages may train several
modalities). Every metric is oriented so that **positive forgetting = worse** and **positive
BWT/FWT = better**, whichever way the metric points: for a lower-is-better metric (a loss) the
differences are negated.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from medkit.eval.metric_info import comparable, column_units

Row = Sequence[float | None]


@dataclass
class CLMetrics:
    """Summary of one matrix. A ``None`` metric has its reason in ``reasons``.

    Means over modalities (``final_mean``, ``forgetting_first``, ``forgetting_max``, ``bwt``,
    ``fwt``) exist only where the columns share one unit (``comparable``): a pretext loss of
    different objectives per modality keeps only its per-modality values (``*_per``). A modality
    whose needed cells are missing (no held-out data, not evaluated) is left out of the means and
    named in ``excluded`` with the reason; the others still count.
    """

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
    fwt_per: dict[str, float] = field(default_factory=dict)
    fwt_baseline: str | None = None
    comparable: bool = True
    units: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    #: a probe's chance level per modality in the last row (its held-out queries' majority-class
    #: rate, ``eval.json``'s ``chance``): what ``final`` must beat; empty for losses and older runs
    chance: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (strict JSON: no NaN)."""
        from medkit.eval.records import json_safe

        return json_safe(asdict(self))


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


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
                      baseline: dict[str, float] | None = None, baseline_name: str | None = None,
                      objectives: Mapping[str, str] | None = None) -> CLMetrics:
    """Forgetting (first- and max-value), BWT and FWT of one matrix.

    Args:
        metric: the matrix's metric name (sets the orientation unless ``higher_is_better`` is given).
        modalities: column names; stage_modalities: the modalities of each row's stage; rows: ``R``
            (``None`` or NaN: no value).
        baseline: ``b_j`` per modality, the value of an untrained encoder (e.g. the last row of a
            ``tfs`` run); without it FWT omits ``b_j`` (``b_j = 0``) and ``fwt_baseline`` says so.
        objectives: each modality's pretext objective; a loss is only averaged over modalities
            that share one (see :func:`medkit.eval.metric_info.comparable`). ``None``: no check.
    """
    from medkit.eval.metric_info import higher_is_better as _hib

    hib = _hib(metric) if higher_is_better is None else higher_is_better
    sign = 1.0 if hib else -1.0
    rows = [[_finite(v) for v in r] for r in rows]
    T = len(rows)
    col = {m: j for j, m in enumerate(modalities)}
    out = CLMetrics(metric=metric, higher_is_better=hib, stages=T,
                    units=column_units(metric, modalities, objectives))
    if T == 0:
        out.reasons = {k: "the matrix has no rows" for k in ("forgetting", "bwt", "fwt", "final")}
        return out
    last = rows[-1]
    out.final = {m: last[col[m]] for m in modalities}
    finals = [m for m, v in out.final.items() if v is not None]
    ok, why = comparable(metric, finals, objectives)
    out.comparable = ok
    out.final_mean = _mean([v for v in (out.final[m] for m in finals) if v is not None]) if ok else None
    if not ok:
        out.reasons["final_mean"] = why
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
        after_own, after_last = rows[s][j], last[j]
        if after_own is None or after_last is None:
            which = [name for name, v in ((f"after its own stage {s + 1}", after_own),
                                          (f"after the last stage {T}", after_last)) if v is None]
            out.excluded[m] = f"no value {' or '.join(which)}: left out of forgetting and BWT"
            continue
        history = [v for v in (rows[i][j] for i in range(s, T - 1)) if v is not None]
        best = max(history) if hib else min(history)
        out.forgetting_first_per[m] = sign * (after_own - after_last)
        out.forgetting_max_per[m] = sign * (best - after_last)
    if earlier and not out.forgetting_first_per:
        out.reasons.update(forgetting="R[s(j), j] or R[T, j] missing for every earlier modality",
                           bwt="R[s(j), j] or R[T, j] missing for every earlier modality")
    ok, why = comparable(metric, list(out.forgetting_first_per), objectives)
    if ok:
        out.forgetting_first = _mean(list(out.forgetting_first_per.values()))
        out.forgetting_max = _mean(list(out.forgetting_max_per.values()))
        out.bwt = None if out.forgetting_first is None else -out.forgetting_first
    else:
        out.reasons.update(forgetting=why, bwt=why)

    # FWT over modalities whose own stage is not the first: value just before their stage
    later = [m for m in modalities if m in own and own[m] >= 1]
    evaluated = 0
    for m in later:
        before = rows[own[m] - 1][col[m]]
        if before is None:
            continue
        evaluated += 1
        if baseline is not None and _finite(baseline.get(m)) is None:
            out.excluded.setdefault(m, "the FWT baseline has no value for it: left out of FWT")
            continue
        b = 0.0 if baseline is None else float(baseline[m])
        out.fwt_per[m] = sign * (before - b)
    ok, why = comparable(metric, list(out.fwt_per), objectives)
    out.fwt = _mean(list(out.fwt_per.values())) if ok else None
    if out.fwt is not None:
        out.fwt_baseline = baseline_name or ("given" if baseline is not None else
                                             "none: b_j omitted (b_j = 0), FWT is the mean value before training")
    elif out.fwt_per:
        out.reasons["fwt"] = why
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
            value = row[j]
            if value is not None:
                out[m] = float(value)
                break
    return out


def run_objectives(run_dir: Path) -> dict[str, str] | None:
    """``{modality: objective}`` from a run's ``config.json`` (``None`` when it has none)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    uses = json.loads(path.read_text(encoding="utf-8")).get("uses") or {}
    return {m: str(u.get("objective")) for m, u in uses.items() if isinstance(u, dict) and u.get("objective")}


def run_metrics(run_dir: Path, *, baseline_run: Path | None = None) -> dict[str, CLMetrics]:
    """:class:`CLMetrics` of every ``metrics/matrix*.csv`` of a run, keyed by metric name."""
    from medkit.eval.matrices import run_matrices

    objectives = run_objectives(Path(run_dir))
    base_matrices = run_matrices(Path(baseline_run)) if baseline_run is not None else {}
    out: dict[str, CLMetrics] = {}
    for metric, matrix in run_matrices(Path(run_dir)).items():
        base = None
        if metric in base_matrices:
            base = baseline_from_rows(base_matrices[metric].modalities, base_matrices[metric].rows)
        out[metric] = continual_metrics(metric, matrix.modalities, matrix.stages, matrix.rows, baseline=base,
                                        baseline_name=None if base is None else f"{baseline_run}",
                                        objectives=objectives)
        if matrix.chance:
            out[metric].chance = {m: float(c) for m, c in zip(matrix.modalities, matrix.chance[-1]) if c is not None}
    return out
