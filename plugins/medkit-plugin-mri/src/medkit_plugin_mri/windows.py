"""Sliding sub-volume windows over indexed volumes: ids, labels, an LRU volume cache, seeded flips."""

from __future__ import annotations

import csv
import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F

from medkit.core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from .volumes import Volume

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
    if tuple(x.shape[1:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=tuple(int(s) for s in size), mode="trilinear",
                         align_corners=False)[0]


def pad_depth(x: torch.Tensor, depth: int, value: float) -> torch.Tensor:
    """Pad ``[C, D, H, W]`` evenly on both ends of ``D`` with ``value`` up to ``depth`` slices."""
    missing = depth - x.shape[1]
    if missing <= 0:
        return x
    before = missing // 2
    return F.pad(x, (0, 0, 0, 0, before, missing - before), value=value)


def seeded_flips(x: torch.Tensor, seed: int, prob: float) -> torch.Tensor:
    """Flip each of the three spatial axes of ``[C, D, H, W]`` with probability ``prob``, drawn from
    ``seed`` alone."""
    draws = torch.rand(3, generator=torch.Generator().manual_seed(int(seed)))
    dims = [axis + 1 for axis in range(3) if draws[axis] < prob]
    return torch.flip(x, dims) if dims else x


def read_labels(root: Path, volume_ids: Sequence[str]) -> tuple[list[int] | None, list[str] | None]:
    """Per-volume labels from ``<root>/labels.csv`` (columns ``id,label``), or ``(None, None)``.

    Labels may be class names or non-negative integers; ids not in the file get ``-1``.
    """
    path = Path(root) / LABELS_FILE
    if not Path(root).is_dir() or not path.is_file():
        return None, None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the label file: {exc}") from exc
    if rows and not {"id", "label"} <= set(rows[0]):
        raise DataError(f"{path}: expected the columns 'id,label', got {sorted(rows[0])}")
    table = {str(r["id"]).strip(): str(r["label"]).strip() for r in rows if r.get("label") not in (None, "")}
    values = sorted(set(table.values()))
    if values and all(v.isdigit() for v in values):
        class_names = [str(i) for i in range(max(int(v) for v in values) + 1)]
        index = {v: int(v) for v in values}
    else:
        class_names = values
        index = {v: i for i, v in enumerate(values)}
    unknown = set(table) - set(volume_ids)
    if unknown:
        log.warning("%s: %d ids match no volume (e.g. %s)", path, len(unknown), sorted(unknown)[0])
    return [index[table[v]] if v in table else -1 for v in volume_ids], class_names


class WindowDataset:
    """Samples are ``depth``-slice windows, ``stride`` apart, of preprocessed volumes.

    ``prepare(volume)`` returns the whole preprocessed volume ``[1, D, H, W]`` with ``D`` equal to
    ``depths[i]`` (kept in a bounded LRU cache); ``finish(window)`` turns a ``[1, depth, H, W]`` cut
    into the sample input. Sample ids are ``"<volume id>#w<k>"``.
    """

    def __init__(self, modality: str, root: Path, volumes: Sequence[Volume], depths: Sequence[int], *,
                 depth: int, stride: int, prepare: Callable[[Volume], torch.Tensor],
                 finish: Callable[[torch.Tensor], torch.Tensor], train: bool, flip_prob: float,
                 cache_size: int, skipped: list[tuple[str, str]]) -> None:
        self.modality, self.root = modality, Path(root)
        self.volumes, self.depths = list(volumes), list(depths)
        self.depth, self.stride = depth, stride
        self._prepare, self._finish = prepare, finish
        self.train, self.flip_prob, self.cache_size = train, flip_prob, cache_size
        self.skipped = list(skipped)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._windows = [(v, s) for v, d in enumerate(self.depths) for s in window_starts(d, depth, stride)]
        self.ids = [f"{self.volumes[v].id}#w{k}" for v, k in self._index_in_volume()]
        vol_labels, self.class_names = read_labels(self.root, [v.id for v in self.volumes])
        self.labels = None if vol_labels is None else [vol_labels[v] for v, _ in self._windows]

    def _index_in_volume(self) -> list[tuple[int, int]]:
        return [(v, s // self.stride) for v, s in self._windows]

    def __len__(self) -> int:
        return len(self._windows)

    def volume(self, v: int) -> torch.Tensor:
        """The preprocessed volume ``v`` ``[1, D, H, W]``, read once and kept in the LRU cache."""
        if v in self._cache:
            self._cache.move_to_end(v)
            return self._cache[v]
        x = self._prepare(self.volumes[v])
        if x.ndim != 4 or x.shape[1] != self.depths[v]:
            raise DataError(f"{self.volumes[v].paths[0]}: preprocessing gave shape {tuple(x.shape)}, "
                            f"expected [1, {self.depths[v]}, H, W]")
        if self.cache_size > 0:
            self._cache[v] = x
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return x

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Window ``index``; with ``train=True`` and an int ``seed``, seeded random flips."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.modality} sample {index} out of range (0..{len(self) - 1})")
        v, start = self._windows[index]
        x = self._finish(self.volume(v)[:, start:start + self.depth])
        if self.train and seed is not None:
            x = seeded_flips(x, seed, self.flip_prob)
        sample: dict[str, Any] = {"input": x.to(torch.float32).clone().contiguous(), "id": self.ids[index]}
        if self.labels is not None:
            sample["label"] = int(self.labels[index])
        return sample
