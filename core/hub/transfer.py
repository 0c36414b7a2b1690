"""Progress of Hub transfers: huggingface_hub's own bars switched on, and one line with the size and rate."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)


def enable_hub_progress() -> bool:
    """Switch huggingface_hub's progress bars (files, bytes, rate, time left) on for a transfer,
    unless the user switched them off (``HF_HUB_DISABLE_PROGRESS_BARS=1``): another library in the
    process may have called ``huggingface_hub.utils.disable_progress_bars()``. Returns whether they
    are on."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    if are_progress_bars_disabled():
        enable_progress_bars()
    return not are_progress_bars_disabled()


def size_of(files: Iterable[Path]) -> int:
    """Total bytes of the regular files among ``files`` (links followed)."""
    total = 0
    for f in files:
        try:
            total += Path(f).stat().st_size
        except OSError:
            continue
    return total


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@contextmanager
def transfer(what: str) -> Iterator[dict[str, int]]:
    """Around a Hub transfer: the bars on, then one line ``<what>: N files, X MB in T (R MB/s)``.
    The caller fills ``files`` and ``bytes`` in the yielded dict once it knows them."""
    enable_hub_progress()
    counts = {"files": 0, "bytes": 0}
    t0 = time.monotonic()
    yield counts
    took = max(time.monotonic() - t0, 1e-9)
    log.info("%s: %d files, %s in %.1fs (%.2f MB/s)", what, counts["files"], _mb(counts["bytes"]), took,
             counts["bytes"] / 1e6 / took)
