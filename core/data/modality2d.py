"""The 2D modality base: options, folder walking, skip/raise, side tables, labels and seeded views.

A 2D modality subclasses :class:`Image2DModality`, calls :meth:`~Image2DModality.set_image_options`
from its ``__init__`` and defines what is really its own: which files it reads (:meth:`file_kind`),
what samples one file gives (:meth:`entries_of`) and how an image is decoded (:meth:`read_image`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from PIL import Image

from medkit.api.batch import TrainViewMixin
from medkit.api.errors import ConfigError, DataError
from medkit.data.image2d import NORMALIZE_MODES, make_view, normalize, to_tensor
from medkit.data.labels import encode_labels, parse_label
from medkit.data.tables import Table, read_table
from medkit.data.upsample import check_max_upsample, upsample_factor, upsample_reason
from medkit.data.walk import OnError, check_on_error, record_skip, walk

log = logging.getLogger(__name__)

LABELS_CSV = "labels.csv"


@dataclass(frozen=True)
class Image2DOptions:
    """The options every 2D modality shares (validated by :meth:`Image2DModality.set_image_options`)."""

    input_size: int = 224
    normalize: str = "none"
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: bool = True
    folder_labels: bool = False
    on_error: str = "raise"
    max_upsample: float | None = None


@dataclass(frozen=True)
class Entry2D:
    """One sample: a region of an image file.

    Attributes:
        id: the sample id (the relative path, or ``<path>#<region>``).
        rel: the image's path relative to the data root (posix).
        path: the file.
        source: what a split keeps together: the image itself, or its patient.
        box: ``(left, upper, right, lower)`` pixels of the region; ``None`` for the whole image.
        kind: a reader hint of the modality (``"raster"``, ``"dicom"``...); ``"region"``: the
            modality's :meth:`Image2DModality.read_image` returns the region itself (a whole-slide
            tile read at its pyramid level), so ``box`` is ``None`` and decoded images are cached
            per sample, not per file.
        dicom: the DICOM identifiers (PatientID, StudyInstanceUID, SeriesInstanceUID,
            SOPInstanceUID) read while indexing, so the split keys need no second header read;
            ``None`` when not a DICOM or not known.
    """

    id: str
    rel: str
    path: Path
    source: str
    box: tuple[float, float, float, float] | None = None
    kind: str = ""
    dicom: Mapping[str, str] | None = None


@dataclass
class Index:
    """What indexing a folder learns besides the entries: side tables, dropped files, counts."""

    root: Path
    tables: dict[str, Table] = field(default_factory=dict)
    filtered: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    #: the dataset's skipped files (:meth:`Image2DModality.upsampled` adds to it whatever ``on_error``)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Image2DDataset(TrainViewMixin):
    """2D samples ``{"input": [C, S, S] float32, "id", "label"}`` of a :class:`Image2DModality`.

    Attributes:
        ids: sample ids. sources: the source of every sample (what a split keeps together).
        labels: one int per sample (``-1`` unlabelled), or ``None`` without labels.
        class_names: names of the label values, or ``None``.
        skipped: ``(file, reason)`` of files skipped with ``on_error="skip"``.
        filtered: ``(file, reason)`` of readable files the modality's filter dropped.
        stats: the modality's indexing counts.
    """

    def __init__(self, modality: Image2DModality, entries: list[Entry2D], labels: list[int] | None,
                 class_names: list[str] | None, train: bool, skipped: list[tuple[str, str]],
                 index: Index) -> None:
        self.modality, self.entries, self.train, self.root = modality, entries, train, index.root
        self.ids = [e.id for e in entries]
        self.sources = [e.source for e in entries]
        self.labels, self.class_names = labels, class_names
        self.skipped, self.filtered, self.stats = skipped, index.filtered, index.stats
        self._cache: tuple[Any, Image.Image] | None = None  # last decoded image (regions come in order)

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None  # never ship a decoded image to DataLoader workers
        return state

    def _image(self, entry: Entry2D) -> Image.Image:
        if entry.kind == "region":
            key: Any = entry.id
        else:  # a file changed on disk is decoded again, never served stale
            st = os.stat(entry.path)
            key = (entry.path, st.st_mtime_ns, st.st_size)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.modality.read_image(entry))
        return self._cache[1]

    def describe(self) -> list[str]:
        """Summary lines for ``medkit data inspect`` (default: none)."""
        return []

    def raw(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as read, before any transform (``medkit data preview``): the region's pixels
        ``[H, W]`` or ``[H, W, C]`` (uint8 or the file's own type), its file and where in the file."""
        entry = self.entries[index]
        img = self._image(entry)
        where = entry.id.partition("#")[2]
        if entry.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in entry.box)
            img = img.crop((x0, y0, x1, y1))
            where = (where + " " if where else "") + f"px ({x0}, {y0})–({x1}, {y1})"
        import numpy as np

        return {"array": np.asarray(img), "file": entry.rel, "where": where}

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Sample ``index`` resized to ``input_size``²: un-augmented with ``seed=None`` or when not
        training, otherwise a RandomResizedCrop within the region + flip drawn only from ``seed``."""
        entry = self.entries[index]
        return sample_of(self.modality, self._image(entry), entry.box, entry.id,
                         None if self.labels is None else self.labels[index], seed if self.train else None)


def sample_of(modality: Image2DModality, img: Image.Image, box: tuple[float, float, float, float] | None,
              sample_id: str, label: int | None, seed: int | None) -> dict[str, Any]:
    """The sample of region ``box`` (``None``: all) of the decoded ``img``, resized to ``input_size``²:
    un-augmented with ``seed=None``, otherwise a RandomResizedCrop + flip drawn only from ``seed``.
    The one load-time view of a 2D modality: the folder path and prepared data both call it."""
    opts = modality.options
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    box = box or (0.0, 0.0, float(img.width), float(img.height))
    x0, y0, x1, y1 = (float(v) for v in box)
    view = make_view(img, (x0, y0, x1, y1), opts.input_size, gen, crop_scale=opts.crop_scale, hflip=opts.hflip)
    x = to_tensor(view)
    if x.shape[0] != modality.channels:
        x = x.expand(modality.channels, -1, -1).contiguous()  # grey → identical channels
    sample: dict[str, Any] = {"input": normalize(x, opts.normalize), "id": sample_id}
    if label is not None:
        sample["label"] = label
    return sample


class Image2DModality:
    """Base of a 2D modality whose samples are (regions of) image files under a folder.

    Subclasses set ``name`` and ``files`` (how the files are described in messages), call
    :meth:`set_image_options`, and define :meth:`file_kind`, :meth:`entries_of` and
    :meth:`read_image`; :meth:`side_tables`, :meth:`select` and :meth:`nothing_left` are optional.
    """

    #: The dataset type :meth:`dataset` builds (a subclass may add :meth:`Image2DDataset.describe`).
    dataset_class: type = Image2DDataset

    name = ""
    dims = 2
    default_tokenizer = "patch_2d"
    default_objective = "mae"
    channels = 3
    files = "images"
    #: Whether folder labels need every image in a folder (else images at the root are unlabelled).
    folder_labels_need_all = False
    options: Image2DOptions

    # -- options -------------------------------------------------------------------------------
    def set_image_options(self, *, input_size: int, normalize: str, crop_scale: Any, hflip: bool,
                          folder_labels: bool, on_error: str, max_upsample: float | None = None) -> None:
        """Validate and keep the shared options as :attr:`options` (``max_upsample``: see
        :meth:`upsampled`; ``None``, the default, sets no limit)."""
        if int(input_size) < 1:
            raise ConfigError(f"modality {self.name}: input_size must be a positive int, got {input_size!r}")
        self.options = Image2DOptions(
            input_size=int(input_size), normalize=self.choice(normalize, "normalize", NORMALIZE_MODES),
            crop_scale=self.pair(crop_scale, "crop_scale", 0.0, 1.0), hflip=bool(hflip),
            folder_labels=bool(folder_labels), on_error=check_on_error(on_error, f"modality {self.name}"),
            max_upsample=check_max_upsample(max_upsample, f"modality {self.name}"))

    def upsampled(self, index: Index, rel: str, where: str, size: tuple[int, int]) -> bool:
        """Whether an image of ``size`` (width, height) would be upsampled to ``input_size``² more than
        ``max_upsample`` times (:mod:`medkit.data.upsample`); such an image is recorded in
        ``index.skipped`` with the reason, whatever ``on_error`` says. ``where``: the file (and the
        DICOM series) for the message."""
        limit, side = self.options.max_upsample, self.options.input_size
        factor = upsample_factor(size, (side, side))
        if limit is None or factor <= limit:
            return False
        sizes = f"its {size[0]}×{size[1]} pixels resized to {side}×{side} (input_size)"
        reason = upsample_reason(self.name, where, sizes, factor, limit)
        record_skip(f"modality {self.name}", index.skipped, rel, reason)
        return True

    def pair(self, value: Any, name: str, low: float, high: float) -> tuple[float, float]:
        """``value`` as ``(a, b)`` with ``low <= a < b <= high``, else a :class:`ConfigError`."""
        try:
            a, b = (float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"modality {self.name}: {name} must be two numbers, got {value!r}; "
                              f"e.g. modality.{self.name}.{name}=[{low},{high}]") from exc
        if not low <= a < b <= high:
            raise ConfigError(f"modality {self.name}: {name} must satisfy {low} <= low < high <= {high}, "
                              f"got {value!r}")
        return a, b

    def choice(self, value: str, name: str, allowed: Sequence[str]) -> str:
        """``value`` when it is one of ``allowed``, else a :class:`ConfigError`."""
        if value not in allowed:
            raise ConfigError(f"modality {self.name}: {name} must be one of {', '.join(allowed)}, got "
                              f"{value!r}; set modality.{self.name}.{name}=<one of them>")
        return value

    def number(self, value: Any, name: str, low: float, high: float | None = None) -> float:
        """``value`` as a float in ``[low, high]`` (``high=None``: no upper bound)."""
        v = float(value)
        if v < low or (high is not None and v > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ConfigError(f"modality {self.name}: {name} must be {bound}, got {value!r}")
        return v

    # -- what a subclass defines ---------------------------------------------------------------
    def file_kind(self, path: Path) -> str | None:
        """A reader hint for a file this modality reads, ``None`` for a file it ignores."""
        raise NotImplementedError

    def entries_of(self, path: Path, rel: str, kind: str, index: Index) -> list[Entry2D]:
        """The samples of one file; raise :class:`DataError` for a bad file (skipped or raised)."""
        raise NotImplementedError

    def read_image(self, entry: Entry2D) -> Image.Image:
        """The decoded image of ``entry`` (mode ``F`` in [0, 1], ``L`` or ``RGB``)."""
        raise NotImplementedError

    def side_tables(self, root: Path) -> dict[str, Table]:
        """Side tables read before indexing (default: none)."""
        return {}

    def select(self, entries: list[Entry2D], index: Index) -> list[Entry2D]:
        """The entries kept once every file is indexed (default: all)."""
        return entries

    def nothing_left(self, index: Index, skipped: int) -> str:
        """The message when every file was skipped or dropped."""
        return f"no usable image left ({skipped} unreadable or not 2D)"

    def demo_data(self, root: Path) -> Path:
        raise NotImplementedError

    # -- indexing ------------------------------------------------------------------------------
    def dataset(self, data: Path, *, train: bool) -> Image2DDataset:
        """Index the files under ``data`` (a folder, or one file); ``train`` enables augmentation.

        Raises:
            DataError: for a missing or empty folder, a bad side table, (``on_error="raise"``) the
                first bad file, or when nothing is left.
        """
        data = Path(data).expanduser()
        if not data.exists():
            raise DataError(f"{self.name} data {data} does not exist; pass --data a folder of {self.files}")
        errors = OnError(self.options.on_error, f"modality {self.name}")
        root, files = walk(data, skipped=errors.skipped)
        if not files:
            raise DataError(f"{self.name} data folder {root} is empty; expected {self.files} (see the "
                            f"medkit-plugin-{self.name} README for the layout)")
        index = Index(root, self.side_tables(root), skipped=errors.skipped)
        entries: list[Entry2D] = []
        candidates = 0
        for path in files:
            kind = self.file_kind(path)
            if kind is None:
                continue
            candidates += 1
            rel = path.relative_to(root).as_posix()
            found = errors.run(rel, self.entries_of, path, rel, kind, index)
            entries.extend(found or [])
        if candidates == 0:
            raise DataError(f"{self.name} data folder {root} has no {self.files} among its {len(files)} "
                            f"files (it is empty of supported images); see the README for the layout")
        entries = self.select(entries, index)
        if not entries:
            raise DataError(f"{self.name} data folder {root}: {self.nothing_left(index, len(errors.skipped))}")
        labels, names = self.labels(root, entries)
        ds = self.dataset_class(self, entries, labels, names, train, errors.skipped, index)
        log.info("%s: %d samples from %d files under %s (%d skipped, %d filtered)", self.name, len(ds),
                 candidates, root, len(errors.skipped), len(index.filtered))
        return ds

    def labels(self, root: Path, entries: list[Entry2D]) -> tuple[list[int] | None, list[str] | None]:
        """Labels from ``labels.csv`` (``path``/``id`` + ``label``), else from the first folder
        level with ``folder_labels``, else none (the rule of :mod:`medkit.data.labels`)."""
        if (root / LABELS_CSV).is_file():
            table = read_table(root / LABELS_CSV, ("label", "class"), labels=True)
            assert table is not None  # only optional=True gives None
            values = [table.get(e.rel) or None for e in entries]
            missing = sum(v is None for v in values)
            if missing:
                log.info("%s: %d of %d samples unlabelled in %s (label -1)", self.name, missing,
                         len(values), root / LABELS_CSV)
        elif self.options.folder_labels and (not self.folder_labels_need_all
                                             or all("/" in e.rel for e in entries)):
            values = [parse_label(e.rel.split("/", 1)[0], str(root / e.rel.split("/", 1)[0]))
                      if "/" in e.rel else None for e in entries]
        else:
            return None, None
        return encode_labels(values)
