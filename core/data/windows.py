"""Sliding sub-volume windows over indexed volumes: ids, labels, cached preprocessing, seeded flips."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F

from medkit.api.batch import TrainViewMixin
from medkit.api.errors import DataError
from medkit.data.cache import DiskCache, VolumeCache
from medkit.data.disk_auto import auto_disk_cache
from medkit.data.labels import UNLABELLED, encode_raw, parse_label, refuse_conflicts
from medkit.data.transforms import resize as _resize

if TYPE_CHECKING:  # pragma: no cover
    from medkit.data.volumes import Volume

log = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"


def window_starts(depth_total: int, depth: int, stride: int) -> list[int]:
    """First slice of every ``depth``-slice window, ``stride`` apart; trailing slices that do not fill
    a whole window are not used (a volume shorter than ``depth`` is padded to one window first)."""
    if depth_total < depth:
        return []
    return list(range(0, depth_total - depth + 1, stride))


def resampled_slices(slices: int, spacing: float, target: float | None) -> int:
    """Slices after resampling ``slices`` at ``spacing`` mm to ``target`` mm (``None``: unchanged)."""
    if target is None:
        return slices
    return max(1, int(math.floor(slices * spacing / target + 0.5)))


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear resize of ``[C, D, H, W]`` to ``[C, *size]`` (a no-op when already that size)."""
    return _resize(x, size)


def pad_depth(x: torch.Tensor, depth: int, value: float) -> torch.Tensor:
    """Pad ``[C, D, H, W]`` evenly on both ends of ``D`` with ``value`` up to ``depth`` slices."""
    missing = depth - x.shape[1]
    if missing <= 0:
        return x
    before = missing // 2
    return F.pad(x, (0, 0, 0, 0, before, missing - before), value=value)


def flip_dims(seed: int, prob: float) -> list[int]:
    """The dims of ``[C, D, H, W]`` that :func:`seeded_flips` flips for ``seed``: each spatial axis
    with probability ``prob``, drawn from ``seed`` alone."""
    flips = (torch.rand(3, generator=torch.Generator().manual_seed(int(seed))) < prob).tolist()  # in float32
    return [axis + 1 for axis in range(3) if flips[axis]]


def seeded_flips(x: torch.Tensor, seed: int, prob: float) -> torch.Tensor:
    """Flip each of the three spatial axes of ``[C, D, H, W]`` with probability ``prob``, drawn from
    ``seed`` alone (:func:`flip_dims`)."""
    dims = flip_dims(seed, prob)
    return torch.flip(x, dims) if dims else x


def read_labels(root: Path, volume_ids: Sequence[str]) -> tuple[list[int] | None, list[str] | None]:
    """Per-volume labels from ``<root>/labels.csv`` (columns ``id,label``), or ``(None, None)``.

    Labels follow :mod:`medkit.data.labels`: class names or integers >= 0; ``-1``, an empty label
    and ids not in the file are unlabelled (``-1``).

    Raises:
        DataError: naming the file and row of a negative or non-integer label, or a bad header.
    """
    path = Path(root) / LABELS_FILE
    if not Path(root).is_dir() or not path.is_file():
        return None, None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = [(reader.line_num, r) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the label file: {exc}") from exc
    if not rows:
        raise DataError(f"{path}: the label file is empty; expected a header 'id,label' and one row per "
                        f"volume, or remove the file to train without labels")
    if rows and not {"id", "label"} <= set(rows[0][1]):
        raise DataError(f"{path}: expected the columns 'id,label', got {sorted(rows[0][1])}")
    refuse_conflicts([(str(r["id"]).strip(), parse_label(r.get("label"), f"{path} line {line}"),
                       f"{path} line {line}") for line, r in rows])
    table = {str(r["id"]).strip(): (r.get("label"), f"{path} line {line}") for line, r in rows}
    unknown = set(table) - set(volume_ids)
    if unknown:
        log.warning("%s: %d ids match no volume (e.g. %s)", path, len(unknown), sorted(unknown)[0])
    codes, names = encode_raw([v for v, _ in table.values()], [w for _, w in table.values()])
    code_of = dict(zip(table, codes))
    return [code_of.get(v, UNLABELLED) for v in volume_ids], names


class WindowDataset(TrainViewMixin):
    """Samples are ``depth``-slice windows, ``stride`` apart, of preprocessed volumes.

    ``prepare(volume)`` returns the whole preprocessed volume ``[1, D, H, W]`` with ``D`` equal to
    ``depths[i]``; ``finish(window)`` turns a ``[1, depth, H, W]`` cut into the sample input. Sample
    ids are ``"<volume id>#w<k>"``; ``sources[i]`` is the id of the volume window ``i`` is cut from.

    Preprocessed volumes are kept in ``cache`` (an LRU bounded by bytes; pass one cache to the
    training and the evaluation dataset of a modality so that they share it) and, with a
    ``disk_cache``, written once to disk, from where later processes read only the window they need.
    With ``auto_disk_cache`` (a factory of the disk cache) and no ``disk_cache``, the first volume
    prepared decides: when all the volumes, prepared, would not fit ``cache``, the disk cache is
    turned on (:func:`medkit.data.disk_auto.auto_disk_cache`), so that no window of a shuffled
    archive larger than the memory cache prepares its whole volume again.
    """

    def __init__(self, modality: str, root: Path, volumes: Sequence[Volume], depths: Sequence[int], *,
                 depth: int, stride: int, prepare: Callable[[Volume], torch.Tensor],
                 finish: Callable[[torch.Tensor], torch.Tensor], train: bool, flip_prob: float,
                 skipped: list[tuple[str, str]], cache: VolumeCache | None = None,
                 disk_cache: DiskCache | None = None, on_error: str = "raise",
                 auto_disk_cache: Callable[[], DiskCache] | None = None) -> None:
        self.modality, self.root = modality, Path(root)
        self.volumes, self.depths = list(volumes), list(depths)
        self.depth, self.stride = depth, stride
        self._prepare, self._finish = prepare, finish
        self.train, self.flip_prob = train, flip_prob
        self.skipped = list(skipped)
        self.on_error = on_error
        self._bad: set[int] = set()  # volumes whose pixels failed with on_error="skip"
        self._cache = cache if cache is not None else VolumeCache(owner=f"modality {modality}")
        self._disk = disk_cache
        self._auto_disk = auto_disk_cache if disk_cache is None else None  # decided at the first preparation
        self._space = str(self.root.resolve())  # the cache may be shared by datasets of other roots
        self._windows = [(v, s) for v, d in enumerate(self.depths) for s in window_starts(d, depth, stride)]
        self.ids = [f"{self.volumes[v].id}#w{k}" for v, k in self._index_in_volume()]
        self.sources = [self.volumes[v].id for v, _ in self._windows]  # the split keeps volumes whole
        vol_labels, self.class_names = read_labels(self.root, [v.id for v in self.volumes])
        self.labels = None if vol_labels is None else [vol_labels[v] for v, _ in self._windows]

    def _index_in_volume(self) -> list[tuple[int, int]]:
        return [(v, s // self.stride) for v, s in self._windows]

    def __len__(self) -> int:
        return len(self._windows)

    def _shape_ok(self, v: int, shape: Sequence[int]) -> bool:
        shape = tuple(shape)
        return len(shape) == 4 and shape[0] == 1 and shape[1] == self.depths[v]

    def _cached_shape_ok(self, v: int, shape: Sequence[int]) -> bool:
        if self._shape_ok(v, shape):
            return True
        log.warning("%s: the disk cache holds shape %s, expected [1, %d, H, W]; rebuilding it",
                    self.volumes[v].paths[0], tuple(shape), self.depths[v])
        return False

    def volume(self, v: int) -> torch.Tensor:
        """The preprocessed volume ``v`` ``[1, D, H, W]``, from the caches or read and preprocessed."""
        key = (self._space, self.volumes[v].id)
        x = self._cache.get(key)
        if x is not None:
            return x
        vol = self.volumes[v]
        if self._disk is not None:
            x = self._disk.read(vol.paths)
            if x is not None and not self._cached_shape_ok(v, x.shape):
                x = None
        if x is None:
            x = self._prepare(vol)
            if not self._shape_ok(v, x.shape):
                raise DataError(f"{vol.paths[0]}: preprocessing gave shape {tuple(x.shape)}, "
                                f"expected [1, {self.depths[v]}, H, W]")
            if self._auto_disk is not None:
                factory, self._auto_disk = self._auto_disk, None
                self._disk = auto_disk_cache(self.modality, self.depths, x.shape, self._cache, factory)
            if self._disk is not None:
                self._disk.write(vol.paths, x)
        self._cache.put(key, x)
        return x

    def _window(self, v: int, start: int) -> tuple[torch.Tensor, bool]:
        """Slices ``start:start + depth`` of volume ``v`` and whether they are a view of a cached
        tensor. A disk-cached volume that the memory cache could not keep is read only in part."""
        key = (self._space, self.volumes[v].id)
        if self._disk is not None and key not in self._cache:
            shape = self._disk.shape(self.volumes[v].paths)
            if shape is not None and self._cached_shape_ok(v, shape) and not self._fits(shape):
                part = self._disk.read(self.volumes[v].paths, start, start + self.depth)
                if part is not None:
                    return part, False
        return self.volume(v)[:, start:start + self.depth], True

    def _fits(self, shape: tuple[int, ...]) -> bool:
        nbytes = 4 * math.prod(shape)
        return self._cache.max_items != 0 and 0 < nbytes <= self._cache.max_bytes

    #: The axcodes :meth:`raw` reorients a volume to (the modality sets its own ``orientation``).
    orientation = "RAS"

    def raw(self, index: int) -> dict[str, Any]:
        """The volume of window ``index`` as read (reoriented to the modality's ``orientation``, before
        resampling, intensity windowing and resizing): ``{"array": [slices, X, Y] float32, "file",
        "where"}`` (``medkit data preview``)."""
        from medkit.data.volumes import load_volume

        v, start = self._windows[index]
        arr = load_volume(self.volumes[v], self.orientation)  # [X, Y, Z]
        return {"array": arr.permute(2, 0, 1).numpy(), "file": self.volumes[v].id,
                "where": f"window {self.ids[index].rpartition('#')[2]}: preprocessed slices {start}–"
                         f"{start + self.depth - 1} of {self.depths[v]}"}

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Window ``index``; with ``train=True`` and an int ``seed``, seeded random flips."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.modality} sample {index} out of range (0..{len(self) - 1})")
        v, start = self._windows[index]
        if self.on_error == "skip":  # a bad volume's windows are served by the next readable ones
            first = index
            for k in range(len(self)):
                index = (first + k) % len(self)
                v, start = self._windows[index]
                try:
                    if v not in self._bad:
                        cut, shared = self._window(v, start)
                        break
                except DataError as exc:
                    self._bad.add(v)
                    self.skipped.append((self.volumes[v].id, str(exc)))
                    log.warning("skipping %s: %s", self.volumes[v].id, exc)
            else:
                raise DataError(f"{self.root}: no readable volume left (every one failed; first: {self.skipped[0][1]})")
        else:
            cut, shared = self._window(v, start)
        x = self._finish(cut)
        if self.train and seed is not None:
            x = seeded_flips(x, seed, self.flip_prob)
        x = x.to(torch.float32)
        if shared and x.untyped_storage().data_ptr() == cut.untyped_storage().data_ptr():
            x = x.clone()  # never hand out a view of a cached volume
        sample: dict[str, Any] = {"input": x.contiguous(), "id": self.ids[index]}
        if self.labels is not None:
            sample["label"] = int(self.labels[index])
        return sample
