"""Side tables next to 2D images (``labels.csv``, ``metadata.csv``...) keyed by path or file id."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from medkit.api.errors import DataError
from medkit.data.labels import parse_label, refuse_conflicts

PATH_COLUMNS = ("path",)
ID_COLUMNS = ("id", "dicom_id", "image_id")


def _norm_path(value: str) -> str:
    value = value.strip().replace("\\", "/")
    while value.startswith("./"):
        value = value[2:]
    return value


class Table:
    """One value per file, looked up by relative path (``path`` column) or file stem (``id``)."""

    def __init__(self, source: Path, by_path: dict[str, str], by_id: dict[str, str]) -> None:
        self.source, self.by_path, self.by_id = source, by_path, by_id

    def get(self, rel: str) -> str | None:
        """The value for the file at ``rel`` (posix path relative to the data root), if listed."""
        if rel in self.by_path:
            return self.by_path[rel]
        name = rel.rsplit("/", 1)[-1]
        stem = name.split(".", 1)[0]
        return self.by_id.get(name, self.by_id.get(stem))


def read_table(source: Path, value_columns: Sequence[str], *, labels: bool = False,
               optional: bool = False) -> Table | None:
    """Read ``source`` (CSV with a header) keeping one of ``value_columns`` (case-insensitive).

    With ``labels``, every value goes through :func:`medkit.data.labels.parse_label` (``-1`` and
    empty become ``""``, unlabelled; a negative or non-integer label is an error naming its row).
    With ``optional``, a file without any of ``value_columns`` gives ``None`` instead of an error.

    Raises:
        DataError: naming the file and the columns found when a key or value column is missing.
    """
    try:
        with open(source, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{source}: cannot read this CSV ({exc}); fix or remove it") from exc
    value = next((fields[c.lower()] for c in value_columns if c.lower() in fields), None)
    path_col = next((fields[c] for c in PATH_COLUMNS if c in fields), None)
    id_col = next((fields[c] for c in ID_COLUMNS if c in fields), None)
    if value is None and optional:
        return None
    if value is None or (path_col is None and id_col is None):
        raise DataError(f"{source}: expected a header with a 'path' (or 'id') column and a "
                        f"{' or '.join(repr(c) for c in value_columns)} column, found "
                        f"{sorted(fields.values())}; fix the header or remove the file")
    by_path: dict[str, str] = {}
    by_id: dict[str, str] = {}
    seen: list[tuple[str, str | None, str]] = []
    for line, row in enumerate(rows, start=2):
        v = (row.get(value) or "").strip()
        if labels:
            v = parse_label(v, f"{source} line {line}") or ""
        if path_col and (row.get(path_col) or "").strip():
            by_path[_norm_path(row[path_col])] = v
            seen.append((f"path:{_norm_path(row[path_col])}", v, f"{source} line {line}"))
        if id_col and (row.get(id_col) or "").strip():
            by_id[row[id_col].strip()] = v
            seen.append((f"id:{row[id_col].strip()}", v, f"{source} line {line}"))
    if labels:
        refuse_conflicts([(key.split(":", 1)[1], label, where) for key, label, where in seen
                          if key.startswith("path:")])
        refuse_conflicts([(key.split(":", 1)[1], label, where) for key, label, where in seen
                          if key.startswith("id:")])
    return Table(source, by_path, by_id)
