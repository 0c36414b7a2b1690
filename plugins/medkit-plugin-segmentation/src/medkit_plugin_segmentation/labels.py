"""Label values of a segmentation data set, discovered from its mask files and reported."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from medkit.api import Item, read_mask

log = logging.getLogger(__name__)

#: seconds between two "scanning label files" lines on a large data set
SCAN_PROGRESS_EVERY_S = 10.0


@dataclass
class LabelScan:
    """What the masks hold: voxel count per label value, and every image's grid (as it is read)."""

    counts: dict[int, int] = field(default_factory=dict)
    masks: int = 0
    shapes: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def values(self) -> list[int]:
        return sorted(self.counts)

    @property
    def top(self) -> int:
        """The largest label value (0 when every mask is empty)."""
        return max(self.counts, default=0)

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-ready record: values, voxels per value (with the class name where one is known),
        mask count and the smallest / largest grid."""
        names = list(class_names or [])
        return {"masks": self.masks, "values": self.values,
                "voxels": {str(v): int(n) for v, n in sorted(self.counts.items())},
                "classes": {str(v): names[v] for v in self.values if v < len(names)},
                "smallest_shape": list(smallest(self.shapes)) if self.shapes else [],
                "largest_shape": list(largest(self.shapes)) if self.shapes else []}


def smallest(shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The per-axis minimum of several grids."""
    return tuple(int(min(s[i] for s in shapes)) for i in range(len(shapes[0])))


def largest(shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The per-axis maximum of several grids."""
    return tuple(int(max(s[i] for s in shapes)) for i in range(len(shapes[0])))


def scan_labels(items: Sequence[Item], *, spacing: Sequence[float] | None = None,
                where: str = "the data") -> LabelScan:
    """Read every mask of ``items`` once (resampled to ``spacing`` as training will read it) and
    count its voxels per label value; a line every :data:`SCAN_PROGRESS_EVERY_S` on large data."""
    scan = LabelScan()
    t0 = last = time.monotonic()
    for k, it in enumerate(items, 1):
        mask = read_mask(it.source[1], spacing=spacing)
        values, counts = np.unique(mask, return_counts=True)
        for v, n in zip(values.tolist(), counts.tolist()):
            scan.counts[int(v)] = scan.counts.get(int(v), 0) + int(n)
        scan.masks += 1
        scan.shapes.append(tuple(int(s) for s in mask.shape))
        now = time.monotonic()
        if now - last >= SCAN_PROGRESS_EVERY_S and k < len(items):
            last = now
            rate = k / max(now - t0, 1e-9)
            log.info("scanning label files of %s: %d/%d (%.1f files/s, ~%.0f s left)", where, k, len(items),
                     rate, (len(items) - k) / rate)
    return scan


def report_labels(scan: LabelScan, class_names: Sequence[str], where: str) -> None:
    """Log the values found with their voxel counts; warn about classes no mask holds and values
    outside the class list."""
    total = max(sum(scan.counts.values()), 1)
    shown = ", ".join(f"{v}{' (' + class_names[v] + ')' if v < len(class_names) else ''}: {n} voxels "
                      f"({100.0 * n / total:.2f}%)" for v, n in sorted(scan.counts.items()))
    log.info("label values in the %d masks of %s: %s", scan.masks, where, shown or "none")
    absent = [f"{c} ({class_names[c]})" for c in range(1, len(class_names)) if c not in scan.counts]
    if absent:
        log.warning("%s: no mask holds class %s; its Dice is scored on empty masks only", where,
                    ", ".join(absent))
    outside = [v for v in scan.values if v >= len(class_names)]
    if outside:
        log.warning("%s: label value(s) %s are outside the class list [%s]; loading those masks will fail "
                    "(fix the masks or set task.num_classes / task.class_names)", where,
                    ", ".join(map(str, outside)), ", ".join(class_names))
