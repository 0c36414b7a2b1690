"""The per-stage evaluation records (``metrics/eval.json``): one numbering (1-based), strict JSON.

A record is ``{"after_stage": i, "modalities": [...], "metrics": {metric: {modality: value}},
"unavailable": {metric: {modality: reason}}}``, with, for probe accuracies, ``"counts"`` (held-out
queries) and ``"chance"`` (their majority-class rate) in the same ``{metric: {modality: ...}}`` shape:
``after_stage`` counts stages from 1, as
``matrix*.csv`` and every report do. Runs written before this numbering hold ``{"stage": i - 1}``;
:func:`normalise_evaluations` reads both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from medkit.api.errors import CheckpointError
from medkit.storage import files as ck

#: The 1-based stage number of a record (the name matrix.csv uses for the same number).
STAGE_KEY = "after_stage"
EVAL_FILE = "eval.json"


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN / ±inf float replaced by ``None`` (tuples become lists), so that it
    serialises as strict JSON (``null``, never a bare ``NaN``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as strict JSON (non-finite floats become ``null``)."""
    ck.atomic_write_json(Path(path), json_safe(obj), allow_nan=False)


def evaluation_record(stage_index: int, modalities: Sequence[str], metrics: Mapping[str, Mapping[str, float]],
                      unavailable: Mapping[str, Mapping[str, str]] | None = None,
                      counts: Mapping[str, Mapping[str, int]] | None = None, *,
                      chance: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
    """The record of the evaluation after the engine's stage ``stage_index`` (0-based, as the engine
    counts); the record itself says ``after_stage = stage_index + 1``.

    Args:
        stage_index: the engine's 0-based index of the stage just finished.
        modalities: the modalities that stage trained.
        metrics: ``{metric: {modality: value}}``; a non-finite value is moved to ``unavailable``.
        unavailable: ``{metric: {modality: reason}}`` for cells that should hold a value but do not
            (no held-out sample, not evaluated after ``--from`` without ``--data``...).
        counts: ``{metric: {modality: n}}``: the held-out samples a value rests on (a probe's
            queries); kept as the record's ``counts`` for the values present.
        chance: ``{metric: {modality: rate}}``: a probe's chance level, the majority-class rate of
            its held-out queries; kept as the record's ``chance`` for the values present.
    """
    values: dict[str, dict[str, float]] = {}
    missing: dict[str, dict[str, str]] = {k: dict(v) for k, v in (unavailable or {}).items()}
    for metric, per in metrics.items():
        values[metric] = {}
        for m, v in per.items():
            if v is None or not math.isfinite(float(v)):
                missing.setdefault(metric, {}).setdefault(m, "the evaluation gave no finite value")
            else:
                values[metric][m] = float(v)
    out = {STAGE_KEY: int(stage_index) + 1, "modalities": list(modalities), "metrics": values,
           "unavailable": {k: v for k, v in missing.items() if v}}
    kept = {k: {m: int(n) for m, n in per.items() if m in values.get(k, {})} for k, per in (counts or {}).items()}
    if any(kept.values()):
        out["counts"] = {k: v for k, v in kept.items() if v}
    rates = {k: {m: float(r) for m, r in per.items() if m in values.get(k, {}) and r is not None
                 and math.isfinite(float(r))} for k, per in (chance or {}).items()}
    if any(rates.values()):
        out["chance"] = {k: v for k, v in rates.items() if v}
    return out


def normalise_record(record: Mapping[str, Any], *, source: str = "eval.json") -> dict[str, Any]:
    """A record in the current layout: ``after_stage`` (1-based) from either layout; an old record's
    0-based ``stage`` becomes ``stage + 1``; NaN values become ``unavailable`` cells."""
    if STAGE_KEY in record:
        number = int(record[STAGE_KEY])
    elif "stage" in record:
        number = int(record["stage"]) + 1
    else:
        raise CheckpointError(f"{source}: an evaluation record has neither {STAGE_KEY!r} nor 'stage' "
                              f"({sorted(record)}); the file is not a medkit eval.json")
    out = evaluation_record(number - 1, record.get("modalities", []), record.get("metrics", {}),
                            record.get("unavailable"), record.get("counts"), chance=record.get("chance"))
    return out


def normalise_evaluations(records: Sequence[Mapping[str, Any]], *, source: str = "eval.json") -> list[dict[str, Any]]:
    """Every record in the current layout (see :func:`normalise_record`), in stage order."""
    out = [normalise_record(r, source=source) for r in records]
    return sorted(out, key=lambda r: r[STAGE_KEY])


def read_evaluations(path: Path) -> list[dict[str, Any]]:
    """The records of an ``eval.json`` of any medkit version, 1-based (``[]`` if the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    data = ck.read_json(path)
    if not isinstance(data, list):
        raise CheckpointError(f"{path}: expected a list of evaluation records, got {type(data).__name__}")
    return normalise_evaluations(data, source=str(path))


def evaluations_before(records: Sequence[Mapping[str, Any]], stages: int) -> list[dict[str, Any]]:
    """The records of the first ``stages`` stages (what a ``--from`` run carries over)."""
    return [r for r in normalise_evaluations(records) if r[STAGE_KEY] <= stages]


def stage_results(records: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, dict[str, float]]]:
    """``{after_stage (1-based): metrics}`` of the records."""
    return {r[STAGE_KEY]: r["metrics"] for r in normalise_evaluations(records)}


def write_evaluations(metrics_dir: Path, records: Sequence[Mapping[str, Any]], modalities: Sequence[str]) -> None:
    """``metrics_dir/eval.json`` (strict JSON, 1-based) and one ``matrix*.csv`` per metric."""
    from medkit.eval.matrices import write_matrices

    clean = normalise_evaluations(records)
    write_json(Path(metrics_dir) / EVAL_FILE, clean)
    write_matrices(Path(metrics_dir), clean, modalities)
