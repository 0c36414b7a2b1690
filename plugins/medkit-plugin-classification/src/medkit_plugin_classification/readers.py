"""Data layouts of the classification task: class-per-folder images, CSV (path,label or
text,label) and the PubMed-RCT text format, with official or automatic train/val/test splits."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from medkit.api import (
    ConfigError, DataError, IMAGE_SUFFIXES, Item, ItemDataset, NIFTI_SUFFIXES, OnError, SPLITS, check_splits,
    generator, normalize, parse_label, random_flips, read_array, relative_id, resize, screen_upsampled, split_three,
    walk,
)

log = logging.getLogger(__name__)

#: Folder / file names that mark an official split (``dev`` is PubMed-RCT's validation file).
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
                 "test": "test"}
TEXT_COLUMNS = ("text", "sentence")
PATH_COLUMNS = ("path", "image", "file", "filename")
LABEL_COLUMNS = ("label", "class", "target")


@dataclass
class ReaderOptions:
    dims: int
    input_size: tuple[int, ...] | None = None
    normalize: str = "unit"
    clip: tuple[float, float] | None = None
    spacing: tuple[float, float, float] | None = None
    augment: bool = True
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    class_names: list[str] | None = None
    num_classes: int | None = None
    on_error: str = "raise"
    max_upsample: float | None = None  # None: keep every image (one warning names those stretched far)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file:line, reason) left out


class Loader:
    """Turns an :class:`Item` into a sample: text as is; images read, normalised, resized and
    (in training, from the seed alone) flipped."""

    def __init__(self, opts: ReaderOptions) -> None:
        self.opts = opts

    def __call__(self, item: Item, seed: int | None, train: bool) -> dict[str, Any]:
        sample: dict[str, Any] = {"id": item.id, "label": item.label}
        if self.opts.dims == 1:
            sample["input"] = item.source
            return sample
        arr = read_array(item.source, spacing=self.opts.spacing)
        if arr.ndim != self.opts.dims + 1:
            raise DataError(f"{item.source}: the image is {arr.ndim - 1}D but this task reads "
                            f"{self.opts.dims}D data; choose a --modality of the right dimension")
        x = normalize(arr, self.opts.normalize, clip=self.opts.clip)  # [C, *S]
        if self.opts.input_size:
            x = resize(x, self.opts.input_size)
        if train and seed is not None and self.opts.augment:
            axes = 1 if self.opts.dims == 2 else 3  # 2D: horizontal flip; 3D: mirror every axis
            (x,) = random_flips([x], generator(seed), axes)
        sample["input"] = x.contiguous()
        return sample


def _suffixes(dims: int) -> tuple[str, ...]:
    return NIFTI_SUFFIXES if dims == 3 else IMAGE_SUFFIXES


def _column(fields: Sequence[str], names: Sequence[str], path: Path, what: str) -> str:
    lower = {f.strip().lower(): f for f in fields}
    for n in names:
        if n in lower:
            return lower[n]
    raise DataError(f"{path}: no {what} column; expected one of {', '.join(names)} in the header "
                    f"(found {', '.join(fields) or 'none'})")


def read_csv(path: Path, opts: ReaderOptions, root: Path) -> dict[str, list[Item]]:
    """Rows of ``text,label`` (1D) or ``path,label`` (2D/3D, paths relative to the CSV); an
    optional ``split`` column (train/val/test) assigns rows to splits, otherwise all go to ``all``."""
    out: dict[str, list[Item]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        source_col = _column(fields, TEXT_COLUMNS if opts.dims == 1 else PATH_COLUMNS, path,
                             "text" if opts.dims == 1 else "image path")
        label_col = _column(fields, LABEL_COLUMNS, path, "label")
        split_col = next((f for f in fields if f.strip().lower() == "split"), None)
        first_row: dict[Any, tuple[str, str]] = {}  # image → (label, row): one image, one label
        for row in reader:
            line = reader.line_num
            origin = f"{path}:{line}"
            value = (row.get(source_col) or "").strip()
            label = parse_label(row.get(label_col), origin)
            if not value or label is None:
                _bad(opts, origin, f"empty {source_col!r} or {label_col!r} value (an empty or -1 label "
                                   f"is unlabelled, which a classification task cannot train on)")
                continue
            split = "all"
            if split_col:
                split = SPLIT_ALIASES.get((row.get(split_col) or "").strip().lower(), "")
                if not split:
                    _bad(opts, origin, f"split {row.get(split_col)!r} is not one of train, val, test")
                    continue
            if opts.dims == 1:
                item = Item(id=f"{path.relative_to(root).as_posix() if path != root else path.name}#row{line - 1}",
                            source=value, label=label, origin=origin)
            else:
                file = (path.parent / value).resolve()
                if not file.is_file():
                    _bad(opts, origin, f"image {value!r} does not exist (looked for {file})")
                    continue
                seen = first_row.setdefault(file, (label, origin))
                if seen[0] != label:
                    raise DataError(f"{seen[1]} and {origin} both list {value!r}, with different labels "
                                    f"({seen[0]!r} and {label!r}); keep one row per image")
                item = Item(id=_rel(file, root), source=file, label=label, origin=origin)
            out.setdefault(split, []).append(item)
    return out


def _rel(file: Path, root: Path) -> str:
    return relative_id(file, root.resolve())


def _bad(opts: ReaderOptions, origin: str, reason: str) -> None:
    OnError(opts.on_error, "task classification", "fix the file or set task.on_error=skip",
            skipped=opts.skipped).bad(origin, reason)


def read_pubmed(path: Path, opts: ReaderOptions) -> list[Item]:
    """PubMed-RCT: ``###<abstract id>`` lines, then ``LABEL<TAB>sentence`` lines, blank lines between
    abstracts. Ids are ``<file>:<abstract>#<k>``."""
    items: list[Item] = []
    abstract, k = "", 0
    for lineno, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("###"):
            abstract, k = line[3:].strip(), 0
            continue
        raw_label, sep, sentence = raw.partition("\t")
        label = parse_label(raw_label, f"{path}:{lineno}") if sep else None
        if label is None or not sentence.strip():
            _bad(opts, f"{path}:{lineno}", "expected 'LABEL<TAB>sentence' or '###<id>'")
            continue
        items.append(Item(id=f"{path.name}:{abstract or 'doc'}#{k}", source=sentence.strip(),
                          label=label, origin=f"{path}:{lineno}"))
        k += 1
    return items


def read_folders(root: Path, opts: ReaderOptions, base: Path) -> list[Item]:
    """``root/<class>/**/<image>``: the class is the first folder level."""
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = parse_label(class_dir.name, str(class_dir))
        if label is None:
            continue  # a folder named -1 holds unlabelled images
        for file in walk(class_dir, _suffixes(opts.dims), skipped=opts.skipped)[1]:
            items.append(Item(id=_rel(file, base), source=file, label=label, origin=str(class_dir)))
    return items


def _class_list(labels: Sequence[str]) -> list[str]:
    unique = sorted(set(labels))
    if unique and all(u.lstrip("-").isdigit() for u in unique):
        return sorted(unique, key=int)
    return unique


def gather(data: Path, opts: ReaderOptions) -> tuple[dict[str, list[Item]], dict[str, str]]:
    """Raw items per split (``all`` when the layout has no official split) and where each came from."""
    data = Path(data)
    if data.is_file():
        if data.suffix.lower() == ".csv":
            return read_csv(data, opts, data.parent), {}
        if data.suffix.lower() == ".txt" and opts.dims == 1:
            return {"all": read_pubmed(data, opts)}, {"all": str(data)}
        raise DataError(f"{data}: a classification data file must be a .csv (text,label or path,label)"
                        f"{' or a PubMed-RCT .txt' if opts.dims == 1 else ''}")
    if not data.is_dir():
        raise DataError(f"{data} does not exist")
    names = {p.name.lower(): p for p in data.iterdir()}
    if opts.dims == 1:
        txt = {SPLIT_ALIASES[n[:-4]]: p for n, p in names.items() if n.endswith(".txt") and n[:-4] in SPLIT_ALIASES}
        if txt:
            if "train" not in txt:
                raise DataError(f"{data}: PubMed-RCT layout needs train.txt (found {', '.join(sorted(txt))})")
            return {s: read_pubmed(p, opts) for s, p in txt.items()}, {s: str(p) for s, p in txt.items()}
    csvs = {SPLIT_ALIASES[n[:-4]]: p for n, p in names.items() if n.endswith(".csv") and n[:-4] in SPLIT_ALIASES}
    if csvs:
        if "train" not in csvs:
            raise DataError(f"{data}: split CSV files need train.csv (found {', '.join(sorted(csvs))})")
        out = {s: read_csv(p, opts, data).get("all", []) for s, p in csvs.items()}
        return out, {s: str(p) for s, p in csvs.items()}
    others = sorted(p for n, p in names.items() if n.endswith(".csv"))
    if len(others) == 1:
        return read_csv(others[0], opts, data), {"all": str(others[0])}
    if len(others) > 1:
        raise DataError(f"{data}: several CSV files ({', '.join(p.name for p in others)}); name them "
                        f"train.csv/val.csv/test.csv or pass one with --data FILE.csv")
    split_dirs = {SPLIT_ALIASES[n]: p for n, p in names.items() if n in SPLIT_ALIASES and p.is_dir()}
    if "train" in split_dirs:
        return ({s: read_folders(p, opts, data) for s, p in split_dirs.items()},
                {s: str(p) for s, p in split_dirs.items()})
    items = read_folders(data, opts, data)
    if not items:
        kind = "train.txt/dev.txt/test.txt or a text CSV" if opts.dims == 1 else \
            f"class folders of {'/'.join(s.lstrip('.') for s in _suffixes(opts.dims))} files or a CSV"
        raise DataError(f"{data}: the folder is empty for this task: expected {kind}")
    return {"all": items}, {"all": str(data)}


def read_classification(data: Path, opts: ReaderOptions) -> dict[str, ItemDataset]:
    """The train/val/test datasets of ``data`` with labels mapped to class indices.

    Raises:
        DataError: naming the file for a label outside the class list, or an empty split.
    """
    opts.skipped = []
    raw, origin = gather(Path(data), opts)
    if "all" in raw:
        pool = raw.pop("all")
        if not pool:
            raise DataError(f"{origin.get('all', data)}: the data are empty (no labelled sample)")
        idx = split_three([it.id for it in pool], val_fraction=opts.val_fraction,
                          test_fraction=opts.test_fraction, origin=origin.get("all", str(data)))
        for name in SPLITS:
            raw.setdefault(name, []).extend(pool[i] for i in idx[name])
            origin.setdefault(name, origin.get("all", str(data)))
        source_of_classes = [it.label for it in pool]
    else:
        source_of_classes = [it.label for it in raw.get("train", [])]
    classes = list(opts.class_names) if opts.class_names else _class_list(source_of_classes)
    if opts.num_classes is not None and len(classes) != int(opts.num_classes):
        raise ConfigError(f"{data}: found {len(classes)} classes ({', '.join(classes)}) but task.num_classes "
                          f"is {opts.num_classes}; fix the data or the setting (or set task.class_names)")
    index = {c: i for i, c in enumerate(classes)}
    if opts.dims > 1:  # images stretched far beyond their own size: kept with a warning, unless limited
        kept = {id(it) for it in screen_upsampled(
            [it for name in SPLITS for it in raw.get(name, [])], lambda it: Path(it.source),
            owner="task classification", dims=opts.dims, input_size=opts.input_size, spacing=opts.spacing,
            limit=opts.max_upsample, skipped=opts.skipped)}
        raw = {name: [it for it in raw.get(name, []) if id(it) in kept] for name in SPLITS}
    loader = Loader(opts)
    splits = {}
    for name in SPLITS:
        items = raw.get(name, [])
        for it in items:
            if it.label not in index:
                raise DataError(f"{it.origin}: label {it.label!r} is not in the class list "
                                f"[{', '.join(classes)}]; fix the label or set task.class_names")
        mapped = [Item(it.id, it.source, index[it.label], it.origin) for it in items]
        splits[name] = ItemDataset(mapped, loader, classes, train=name == "train", name=name,
                                   skipped=list(opts.skipped))
    return check_splits(splits, origin)
