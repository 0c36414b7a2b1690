"""The stage × modality matrices ``metrics/matrix*.csv``: the one reader and writer.

Layout: a header ``after_stage, stage_modalities, <one column per modality>``, then one row per
finished stage: ``after_stage`` counts from 1, ``stage_modalities`` joins the modalities that stage
trained with ``+``. A cell holds the value with 6 decimals, is empty when the modality was not
evaluated at that stage (not seen yet), or ``n/a`` when it should have been but could not be (the
reason is in ``eval.json``'s ``unavailable``). Readers also accept ``nan`` (older runs) as ``n/a``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from medkit.api.errors import CheckpointError
from medkit.storage.files import atomic_write_text

#: The file of each metric whose name is not ``matrix_<metric>.csv``.
MATRIX_FILES = {"pretext_loss": "matrix.csv"}
HEADER = ("after_stage", "stage_modalities")
NOT_AVAILABLE = "n/a"
_NA_TEXT = {NOT_AVAILABLE, "nan", "-nan", "na"}


def matrix_name(metric: str) -> str:
    """``pretext_loss`` → ``matrix.csv``; ``<metric>`` → ``matrix_<metric>.csv``."""
    return MATRIX_FILES.get(metric, f"matrix_{metric}.csv")


def metric_of(path: Path) -> str:
    """``matrix.csv`` → ``pretext_loss``; ``matrix_<metric>.csv`` → ``<metric>``."""
    named = {file: metric for metric, file in MATRIX_FILES.items()}
    path = Path(path)
    if path.name in named:
        return named[path.name]
    return path.stem[len("matrix_"):] if path.stem.startswith("matrix_") else path.stem


def matrix_files(run_dir: Path) -> dict[str, Path]:
    """``{metric: path}`` of the matrices a run wrote, ``pretext_loss`` first, then by name."""
    metrics = Path(run_dir) / "metrics"
    found = sorted(metrics.glob("matrix*.csv")) if metrics.is_dir() else []
    out = {metric_of(p): p for p in found if metric_of(p)}
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "pretext_loss", kv[0])))


@dataclass
class Matrix:
    """One metric's matrix: ``rows[i][j]`` is modality ``j`` after stage ``after[i]`` (1-based).

    ``rows[i][j] is None`` means no value: ``na[i][j]`` tells "could not be evaluated" (``n/a``)
    from "not evaluated at this stage" (an empty cell).
    """

    metric: str
    modalities: list[str]
    after: list[int]
    stages: list[list[str]]
    rows: list[list[float | None]]
    na: list[list[bool]] = field(default_factory=list)
    path: Path | None = None
    #: ``counts[i][j]``: the held-out samples the cell rests on (probe queries), ``None`` if unknown.
    counts: list[list[int | None]] = field(default_factory=list)
    #: ``chance[i][j]``: the chance level of a probe cell (its queries' majority-class rate), ``None``
    #: if unknown or not a probe.
    chance: list[list[float | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.na:
            self.na = [[False] * len(self.modalities) for _ in self.rows]

    def row_labels(self) -> list[str]:
        """``after stage 2 (mri)`` for every row."""
        return [f"after stage {a} ({'+'.join(s) or '–'})" for a, s in zip(self.after, self.stages)]

    def column(self, modality: str) -> list[float | None]:
        j = self.modalities.index(modality)
        return [r[j] for r in self.rows]


def _cell(values: Mapping[str, float], missing: Mapping[str, str], m: str) -> str:
    if m in values and values[m] is not None and math.isfinite(float(values[m])):
        return f"{float(values[m]):.6f}"
    return NOT_AVAILABLE if (m in missing or m in values) else ""


def matrix_csv(records: Sequence[Mapping[str, Any]], modalities: Sequence[str], metric: str) -> str:
    """CSV text of ``metric`` from evaluation records (either numbering, see
    :func:`medkit.eval.records.normalise_evaluations`)."""
    from medkit.eval.records import STAGE_KEY, normalise_evaluations

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*HEADER, *modalities])
    for row in normalise_evaluations(records):
        values = row["metrics"].get(metric, {})
        missing = row.get("unavailable", {}).get(metric, {})
        writer.writerow([row[STAGE_KEY], "+".join(row["modalities"]), *[_cell(values, missing, m) for m in modalities]])
    return buf.getvalue()


def write_matrices(metrics_dir: Path, records: Sequence[Mapping[str, Any]], modalities: Sequence[str]) -> list[Path]:
    """One ``matrix*.csv`` per metric found in ``records``; returns the files written."""
    metrics = sorted({k for row in records for k in [*row.get("metrics", {}), *row.get("unavailable", {})]})
    out = []
    for metric in metrics:
        path = Path(metrics_dir) / matrix_name(metric)
        atomic_write_text(path, matrix_csv(records, modalities, metric))
        out.append(path)
    return out


def _value(text: str, path: Path, line: int) -> tuple[float | None, bool]:
    text = text.strip()
    if text == "":
        return None, False
    if text.lower() in _NA_TEXT:
        return None, True
    try:
        value = float(text)
    except ValueError:
        raise CheckpointError(f"{path} line {line}: cell {text!r} is not a number, empty or "
                              f"{NOT_AVAILABLE!r}; the matrix is corrupted — re-run the evaluation") from None
    return (value, False) if math.isfinite(value) else (None, True)


def load_matrix(path: Path, metric: str | None = None) -> Matrix:
    """Read a matrix CSV; a file in another layout is a :class:`CheckpointError` naming it."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            table = [r for r in csv.reader(fh) if r]
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing") from exc
    if not table or len(table[0]) < 3 or tuple(table[0][:2]) != HEADER:
        raise CheckpointError(f"{path} is not a medkit stage matrix (expected the columns after_stage, "
                              f"stage_modalities, <modalities>)")
    mods = table[0][2:]
    after, stages, rows, na = [], [], [], []
    for line, r in enumerate(table[1:], start=2):
        r = r + [""] * (len(table[0]) - len(r))
        try:
            after.append(int(r[0]))
        except ValueError:
            raise CheckpointError(f"{path} line {line}: after_stage {r[0]!r} is not a stage number") from None
        stages.append([m for m in r[1].split("+") if m])
        cells = [_value(v, path, line) for v in r[2:2 + len(mods)]]
        rows.append([c[0] for c in cells])
        na.append([c[1] for c in cells])
    return Matrix(metric or metric_of(path), mods, after, stages, rows, na, path)


def run_matrices(run_dir: Path) -> dict[str, Matrix]:
    """Every matrix of a run, keyed by metric (``pretext_loss`` first), with the sample count of each
    cell that ``eval.json`` records (:func:`attach_counts`)."""
    from medkit.eval.records import read_evaluations

    out = {metric: load_matrix(path, metric) for metric, path in matrix_files(run_dir).items()}
    records = read_evaluations(Path(run_dir) / "metrics" / "eval.json") if out else []
    for matrix in out.values():
        attach_counts(matrix, records)
    return out


def attach_counts(matrix: Matrix, records: Sequence[Mapping[str, Any]]) -> Matrix:
    """Fill ``matrix.counts`` and ``matrix.chance`` from the records' ``counts`` (``{metric: {modality:
    n}}``) and ``chance`` (``{metric: {modality: rate}}``) by stage."""
    from medkit.eval.records import STAGE_KEY

    by_stage = {int(r[STAGE_KEY]): r.get("counts", {}).get(matrix.metric, {}) for r in records}
    matrix.counts = [[by_stage.get(a, {}).get(m) for m in matrix.modalities] for a in matrix.after]
    rates = {int(r[STAGE_KEY]): r.get("chance", {}).get(matrix.metric, {}) for r in records}
    matrix.chance = [[rates.get(a, {}).get(m) for m in matrix.modalities] for a in matrix.after]
    return matrix


def read_matrix(path: Path) -> tuple[list[str], list[list[float | None]]]:
    """(modalities, rows) of a matrix CSV; missing and ``n/a`` entries are ``None``."""
    m = load_matrix(path)
    return m.modalities, m.rows


def read_matrix_stages(path: Path) -> tuple[list[str], list[list[str]], list[list[float | None]]]:
    """(modalities, the modalities trained in each row's stage, rows) of a matrix CSV."""
    m = load_matrix(path)
    return m.modalities, m.stages, m.rows


# -- text ---------------------------------------------------------------------------------------
def fmt_value(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals (no ``-0.0000``; 4 significant digits from 1e4 up), or
    ``–`` when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if abs(value) >= 1e4:
        return f"{value:.4g}"
    return f"{value + 0.0 if abs(value) >= 0.5 * 10 ** -digits else 0.0:.{digits}f}"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def matrix_markdown(matrix: Matrix, *, digits: int = 4) -> str:
    """The matrix as a markdown table: ``–`` not evaluated at that stage, ``n/a`` could not be; a cell
    with a recorded sample count and chance level says them (``0.8125 (n=16, chance 0.50)``)."""
    lines = ["| after stage | trained on | " + " | ".join(_md(m) for m in matrix.modalities) + " |",
             "|---|---|" + "---:|" * len(matrix.modalities)]
    counts = matrix.counts or [[None] * len(matrix.modalities) for _ in matrix.rows]
    chance = matrix.chance or [[None] * len(matrix.modalities) for _ in matrix.rows]
    for a, stage, row, na, ns, cs in zip(matrix.after, matrix.stages, matrix.rows, matrix.na, counts, chance):
        cells = [NOT_AVAILABLE if flag else fmt_value(v, digits) + _note(v, n, c)
                 for v, flag, n, c in zip(row, na, ns, cs)]
        lines.append(f"| {a} | {_md('+'.join(stage))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _note(value: float | None, n: int | None, chance: float | None) -> str:
    """`` (n=16, chance 0.50)`` after a cell's value: what it rests on and what it must beat."""
    parts = ([f"n={n}"] if n is not None else []) + ([f"chance {chance:.2f}"] if chance is not None else [])
    return f" ({', '.join(parts)})" if parts and value is not None else ""
