"""Deterministic, seeded held-out splits by a hash of each sample id."""

from __future__ import annotations

import hashlib
from typing import Sequence


def split_indices(ids: Sequence[str], val_fraction: float = 0.1, *, min_val: int = 1) -> tuple[list[int], list[int]]:
    """Deterministic train/held-out split by a hash of each sample id.

    The same id always lands in the same split, whatever the order or the other files; at least
    ``min_val`` samples (and at least one training sample) are held out when there are two or more.
    """
    if len(ids) == 0:
        return [], []
    score = [int(hashlib.sha1(str(i).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for i in ids]
    val = [i for i, s in enumerate(score) if s < val_fraction]
    if len(ids) >= 2 and len(val) < min_val:
        order = sorted(range(len(ids)), key=lambda i: score[i])
        val = sorted(order[:min(min_val, len(ids) - 1)])
    if len(val) == len(ids):
        val = val[:-1]
    val_set = set(val)
    return [i for i in range(len(ids)) if i not in val_set], sorted(val_set)
