"""The ``report`` modality: readers for .txt folders, CSV and JSONL text columns, MIMIC-CXR sections."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from medkit.api import ConfigError, DataError, OnError, check_on_error, encode_labels, parse_label, walk

from medkit_plugin_report.cleaning import SECTION_CHOICES, clean_report, select_text

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".csv", ".jsonl")
LABELS_FILE = "labels.csv"  # label table of a .txt folder: columns ``id`` and the label column


@dataclass
class ReportDataset:
    """Cleaned report texts held in memory (reports are small), one sample per report.

    Attributes:
        texts: the text each sample returns as ``input``.
        ids: ``"<relative file>"`` for a .txt report, ``"<relative file>#row<k>"`` for row ``k``
            (0-based, header excluded) of a CSV or JSONL file.
        sources: the source of every sample (the report itself: its id).
        labels: one int per sample (``-1`` = unlabelled), or ``None`` without labels.
        class_names: label names, index = label value.
        skipped: ``(file or id, reason)`` for every file or report left out while indexing.
    """

    texts: list[str]
    ids: list[str]
    labels: list[int] | None = None
    class_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def sources(self) -> list[str]:
        return list(self.ids)

    def view(self, train: bool) -> ReportDataset:
        """Texts have no augmentation: the training and evaluation views are the same dataset."""
        return self

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Sample ``index``; there is no text augmentation (MLM masking is drawn by the objective),
        so every ``seed`` gives the same sample."""
        sample: dict[str, Any] = {"input": self.texts[index], "id": self.ids[index]}
        if self.labels is not None:
            sample["label"] = self.labels[index]
        return sample


def _decode(path: Path, rel: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"report file {rel}: expected UTF-8 text, but byte {exc.start} is not valid UTF-8 "
                        f"({exc.reason}); re-encode it (iconv -f latin1 -t utf-8) or set "
                        f"modality.report.on_error=skip") from exc


class ReportModality:
    """Free-text radiology reports (dims 1; tokenizer ``text_1d``, objective ``mlm``).

    Reads, recursively and in sorted order, every ``*.txt`` (one report per file; labels from an
    optional ``labels.csv`` with columns ``id`` and ``label``), ``*.csv`` and ``*.jsonl`` file
    (one report per row, text in ``text_column``, label in ``label_column``). A path to a single
    file works too. Texts go through MIMIC-CXR section selection and the MedCoSS cleaning.

    Args:
        text_column: CSV/JSONL column holding the report text.
        label_column: CSV/JSONL column holding the label (``None``: ``"label"`` if present);
            for .txt folders, the column of ``labels.csv`` to use (default ``"label"``).
        sections: ``"findings+impression"`` (impression + " " + findings of MIMIC-style reports,
            the whole text when a report has neither header) or ``"all"`` (the whole text).
        clean: apply the MedCoSS cleaning (lowercase, ``\\w+`` ASCII tokens, sentences of one
            token dropped); ``False`` keeps the selected text with whitespace collapsed.
        min_tokens: reports with fewer tokens after cleaning are dropped (and listed in ``skipped``).
        on_error: ``"raise"`` (a :class:`DataError` naming the file) or ``"skip"`` (log, record
            in ``dataset.skipped`` and go on) for unreadable files.
    """

    name = "report"
    dims = 1
    default_tokenizer = "text_1d"
    default_objective = "mlm"

    def __init__(self, text_column: str = "text", label_column: str | None = None,
                 sections: str = "findings+impression", clean: bool = True, min_tokens: int = 3,
                 on_error: str = "raise") -> None:
        if sections not in SECTION_CHOICES:
            raise ConfigError(f"modality report: sections must be one of {', '.join(SECTION_CHOICES)}, "
                              f"got {sections!r}; set modality.report.sections accordingly")
        check_on_error(on_error, "modality report")
        self.text_column, self.label_column = text_column, label_column
        self.sections, self.clean, self.min_tokens, self.on_error = sections, clean, int(min_tokens), on_error

    # -- public API ------------------------------------------------------------------------
    def demo_data(self, root: Path) -> Path:
        """Write 200 synthetic MIMIC-style reports and ``labels.csv`` under ``root/report`` (once)."""
        from medkit_plugin_report.demo import write_demo

        return write_demo(Path(root) / "report")

    def dataset(self, data: Path, *, train: bool = False) -> ReportDataset:
        """Index and clean every report under ``data`` (``train`` changes nothing: no augmentation)."""
        data = Path(data)
        if not data.exists():
            raise DataError(f"report data {data} does not exist; pass --data with a folder of .txt, .csv "
                            f"or .jsonl reports")
        unreadable: list[tuple[str, str]] = []  # FIFOs, dangling links: listed as skipped, never read
        base, files = walk(data, None if data.is_file() else SUFFIXES, exclude=(LABELS_FILE,), skipped=unreadable)
        if not files:
            raise DataError(f"report data folder {data} is empty: no .txt, .csv or .jsonl files found "
                            f"(labels.csv alone is not data); add reports or point --data elsewhere")
        ds = ReportDataset(texts=[], ids=[])
        ds.skipped.extend(unreadable)
        errors = OnError(self.on_error, "modality report", skipped=ds.skipped)
        raw_labels: list[str | None] = []
        txt_labels = self._txt_labels(base) if any(f.suffix.lower() == ".txt" for f in files) else {}
        for path in files:
            rel = path.relative_to(base).as_posix()
            records = errors.run(rel, lambda p=path, r=rel: list(self._records(p, r, txt_labels)))
            if records is None:
                continue
            for sid, text, label in records:
                text = select_text(text, self.sections)
                if self.clean:
                    cleaned = clean_report(text)
                    text, count = cleaned.text, cleaned.num_tokens
                else:
                    text = " ".join(text.split())
                    count = len(text.split())
                if count < self.min_tokens or not text:
                    ds.skipped.append((sid, f"fewer than {self.min_tokens} tokens after cleaning"))
                    continue
                ds.texts.append(text)
                ds.ids.append(sid)
                raw_labels.append(label)
        if not ds.texts and not ds.skipped:
            raise DataError(f"no reports under {data}: {', '.join(str(f) for f in files[:3])} hold no rows "
                            f"(an empty file?); expected text in the column {self.text_column!r}")
        if not ds.texts:
            raise DataError(f"no usable reports under {data}: {len(ds.skipped)} file(s)/report(s) skipped "
                            f"({ds.skipped[0][0]}: {ds.skipped[0][1]}); check the files and "
                            f"modality.report.text_column")
        if any(r is not None for r in raw_labels):
            ds.labels, ds.class_names = encode_labels(raw_labels)
        log.info("report: %d reports from %d file(s) under %s (%d skipped)", len(ds), len(files), data,
                 len(ds.skipped))
        return ds

    # -- readers ---------------------------------------------------------------------------
    def _records(self, path: Path, rel: str,
                 txt_labels: dict[str, str]) -> Iterator[tuple[str, str, str | None]]:
        """``(id, raw text, raw label)`` of every report in one file."""
        suffix = path.suffix.lower()
        content = _decode(path, rel)
        if suffix == ".txt":
            yield rel, content, txt_labels.get(rel)  # labels.csv rows are checked when read
        elif suffix == ".csv":
            yield from self._rows(rel, csv.DictReader(io.StringIO(content, newline="")), "CSV header")
        else:
            yield from self._rows(rel, self._jsonl(rel, content), "JSON keys")

    def _rows(self, rel: str, rows: Any, where: str) -> Iterator[tuple[str, str, str | None]]:
        label_col = self.label_column
        for k, row in enumerate(rows):
            if self.text_column not in row:
                raise DataError(f"report file {rel}: expected a text column {self.text_column!r} in the {where} "
                                f"(row {k} has {', '.join(map(str, row)) or 'no columns'}); set "
                                f"modality.report.text_column to the column that holds the report")
            if label_col is not None and label_col not in row:
                raise DataError(f"report file {rel}: expected a label column {label_col!r} (row {k} has "
                                f"{', '.join(map(str, row))}); set modality.report.label_column or null")
            col = label_col if label_col is not None else ("label" if "label" in row else None)
            value = row.get(col) if col is not None else None
            label = parse_label(value, f"report file {rel} row {k} (column {col!r})")
            yield f"{rel}#row{k}", str(row[self.text_column] or ""), label

    @staticmethod
    def _jsonl(rel: str, content: str) -> Iterator[dict[str, Any]]:
        for line_no, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"report file {rel} line {line_no}: expected one JSON object per line "
                                f"({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(f"report file {rel} line {line_no}: expected a JSON object, got "
                                f"{type(row).__name__}")
            yield row

    def _txt_labels(self, base: Path) -> dict[str, str]:
        """``{relative .txt path: label}`` from ``base/labels.csv`` (empty when there is none)."""
        path = base / LABELS_FILE
        if not path.is_file():
            return {}
        col = self.label_column or "label"
        rows = list(csv.DictReader(io.StringIO(_decode(path, LABELS_FILE), newline="")))
        if rows and ("id" not in rows[0] or col not in rows[0]):
            raise DataError(f"{path}: expected columns 'id' and {col!r} (relative .txt path and label), got "
                            f"{', '.join(rows[0])}; fix the header or set modality.report.label_column")
        labels: dict[str, str | None] = {}
        first_line: dict[str, int] = {}
        for k, r in enumerate(rows):
            key, label = r["id"].strip(), parse_label(r[col], f"{path} line {k + 2}")
            if key in labels and labels[key] != label:  # one report, one label
                raise DataError(f"{path} line {first_line[key]} and {path} line {k + 2} both list {key!r}, with "
                                f"different labels ({labels[key]!r} and {label!r}); keep one row per report")
            labels.setdefault(key, label)
            first_line.setdefault(key, k + 2)
        return {k: v for k, v in labels.items() if v is not None}
