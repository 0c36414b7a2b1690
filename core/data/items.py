"""Datasets of the fine-tuning tasks: items (what to read, label, source) and their train/val/test splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from medkit.api.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Item:
    """One sample before loading.

    Attributes:
        id: the sample id (a path relative to the data root, or ``file#row``).
        source: what to read (a path, a pair of paths, or the text itself).
        label: the label (a name before encoding, an int after).
        origin: the file (and line) it came from, for messages.
        group: the source the split keeps together (patient, volume); empty: the sample itself.
    """

    id: str
    source: Any
    label: Any = None
    origin: str = ""
    group: str = ""


@dataclass
class ItemDataset:
    """A split of a downstream dataset: ``load(i, seed)`` calls ``loader(item, seed, train)``."""

    items: list[Item]
    loader: Callable[[Item, int | None, bool], dict[str, Any]]
    class_names: list[str] | None
    train: bool = False
    name: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    @property
    def sources(self) -> list[str]:
        """The source of every sample (its group, else its id): what a split keeps together."""
        return [it.group or it.id for it in self.items]

    @property
    def labels(self) -> list[int] | None:
        if self.items and all(isinstance(it.label, int) for it in self.items):
            return [int(it.label) for it in self.items]
        return None

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        return self.loader(self.items[index], seed if self.train else None, self.train)


def check_splits(splits: dict[str, ItemDataset], origin: dict[str, str]) -> dict[str, ItemDataset]:
    """Refuse an empty split with a :class:`DataError` naming the file or folder it came from."""
    for name in SPLITS:
        if name not in splits or len(splits[name]) == 0:
            where = origin.get(name, "the data")
            raise DataError(f"{where}: the {name!r} split is empty; every split needs at least one "
                            f"sample (add data to it, or remove the split files to split automatically)")
    return splits
