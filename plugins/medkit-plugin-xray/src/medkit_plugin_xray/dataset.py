"""Indexing of an X-ray folder (frontal filter, labels, skipped files) and loading of samples."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from medkit.api.batch import TrainViewMixin
from medkit.api.errors import DataError
from medkit.data.image2d import make_view, normalize, to_tensor
from medkit.data.tables import encode_labels, read_table
from medkit_plugin_xray.readers import file_kind, probe, read_grey

log = logging.getLogger(__name__)

LABELS_CSV = "labels.csv"
METADATA_CSV = "metadata.csv"
#: First word of a ViewPosition that marks a frontal projection (PA, AP, "AP AXIAL", "PA LLD"...).
FRONTAL_VIEWS = frozenset({"PA", "AP", "FRONTAL"})


@dataclass(frozen=True)
class XrayOptions:
    """The validated options of :class:`~medkit_plugin_xray.modality.XrayModality`."""

    input_size: int = 224
    frontal_only: bool = True
    normalize: str = "none"
    intensity: str = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: bool = True
    folder_labels: bool = False
    verify: bool = False
    on_error: str = "raise"


@dataclass(frozen=True)
class Entry:
    rel: str  # posix path relative to the data root: the sample id
    path: Path
    kind: str  # "raster" or "dicom"


def is_frontal(view: str | None) -> bool | None:
    """``True`` for PA/AP views, ``False`` for any other stated view (LL, LATERAL, RL, LAO...),
    ``None`` when the view is unknown (such images are kept)."""
    if view is None or not view.strip():
        return None
    words = view.strip().upper().replace("_", " ").replace("-", " ").split()
    return words[0] in FRONTAL_VIEWS


def list_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, sorted, skipping hidden files and folders."""
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        out.append(p)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


class XrayDataset(TrainViewMixin):
    """X-ray samples ``{"input": [3, S, S] float32, "id": relative path, "label": int}``.

    Attributes:
        ids: relative paths (posix) of the images kept.
        labels: one int per sample (``-1`` unlabelled), or ``None`` without labels.
        class_names: names of the label values, or ``None``.
        skipped: ``(file, reason)`` of unreadable or non-2D files skipped with ``on_error="skip"``.
        filtered: ``(file, reason)`` of readable images dropped by the frontal-view filter.
    """

    def __init__(self, root: Path, entries: list[Entry], labels: list[int] | None,
                 class_names: list[str] | None, options: XrayOptions, train: bool,
                 skipped: list[tuple[str, str]], filtered: list[tuple[str, str]]) -> None:
        self.root, self.entries, self.options, self.train = root, entries, options, train
        self.ids = [e.rel for e in entries]
        self.labels, self.class_names = labels, class_names
        self.skipped, self.filtered = skipped, filtered

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Sample ``index``: un-augmented with ``seed=None`` or when not training, otherwise a
        RandomResizedCrop + flip drawn only from ``seed``."""
        entry, opts = self.entries[index], self.options
        grey = read_grey(entry.path, entry.kind, intensity=opts.intensity, percentiles=opts.percentiles)
        img = Image.fromarray(grey)  # mode "F", values in [0, 1]
        gen = torch.Generator().manual_seed(int(seed)) if self.train and seed is not None else None
        view = make_view(img, (0.0, 0.0, float(img.width), float(img.height)), opts.input_size, gen,
                         crop_scale=opts.crop_scale, hflip=opts.hflip)
        x = to_tensor(view).expand(3, -1, -1).contiguous()  # grey → 3 identical channels
        sample: dict[str, Any] = {"input": normalize(x, opts.normalize), "id": entry.rel}
        if self.labels is not None:
            sample["label"] = self.labels[index]
        return sample


def build_dataset(data: Path, options: XrayOptions, *, train: bool) -> XrayDataset:
    """Index ``data`` (a folder, or one file) into an :class:`XrayDataset`.

    Raises:
        DataError: for a missing or empty folder, a bad side table, or (``on_error="raise"``) the
            first unreadable or non-2D file; also when every image was skipped or filtered.
    """
    data = Path(data).expanduser()
    if not data.exists():
        raise DataError(f"xray data {data} does not exist; pass --data a folder of X-ray images")
    root, files = (data.parent, [data]) if data.is_file() else (data, list_files(data))
    if not files:
        raise DataError(f"xray data folder {root} is empty; expected PNG/JPEG/TIFF or DICOM X-rays "
                        f"(see the medkit-plugin-xray README for the layout)")
    views = read_table(root / METADATA_CSV, ("ViewPosition", "view")) \
        if (root / METADATA_CSV).is_file() else None
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    filtered: list[tuple[str, str]] = []
    candidates = 0
    for path in files:
        kind = file_kind(path)
        if kind is None:
            continue
        candidates += 1
        rel = path.relative_to(root).as_posix()
        try:
            header = probe(path, kind, verify=options.verify)
        except DataError as exc:
            if options.on_error == "raise":
                raise
            log.warning("xray: skipping %s: %s", rel, exc)
            skipped.append((rel, str(exc)))
            continue
        view = (views.get(rel) if views is not None else None) or header.view
        if options.frontal_only and is_frontal(view) is False:
            filtered.append((rel, f"view {view!r} is not frontal (frontal_only=True)"))
            continue
        entries.append(Entry(rel, path, header.kind))
    if filtered:
        log.info("xray: %d non-frontal images dropped from %s (set frontal_only=false to keep them)",
                 len(filtered), root)
    if not entries:
        if candidates == 0:
            raise DataError(f"xray data folder {root} has no X-ray images among its {len(files)} files "
                            f"(it is empty of PNG/JPEG/TIFF/DICOM files); see the README for the layout")
        raise DataError(f"xray data folder {root}: no usable image left ({len(skipped)} unreadable or "
                        f"not 2D, {len(filtered)} non-frontal); check the files or set frontal_only=false")
    labels, class_names = _labels(root, entries, options)
    return XrayDataset(root, entries, labels, class_names, options, train, skipped, filtered)


def _labels(root: Path, entries: list[Entry], options: XrayOptions) -> tuple[list[int] | None, list[str] | None]:
    """Labels from ``labels.csv`` (``path``/``id`` + ``label``), else from the first folder level
    when ``folder_labels``, else none."""
    if (root / LABELS_CSV).is_file():
        table = read_table(root / LABELS_CSV, ("label", "class"))
        values = [table.get(e.rel) for e in entries]
        missing = sum(v is None or v == "" for v in values)
        if missing:
            log.warning("xray: %d of %d images have no row in %s (label -1)", missing, len(values),
                        root / LABELS_CSV)
    elif options.folder_labels:
        values = [e.rel.split("/", 1)[0] if "/" in e.rel else None for e in entries]
    else:
        return None, None
    labels, names = encode_labels(values)
    return labels, names
