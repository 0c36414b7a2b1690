"""Progress of sliding-window evaluation: windows done, rate and time left (for the image and for the
whole evaluation), as periodic log lines."""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Sequence

import torch

log = logging.getLogger(__name__)


def window_count(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Windows MONAI's ``sliding_window_inference`` runs over one image.

    MONAI's own rule, written out because its helper (``_get_scan_interval``) is private: an image
    smaller than the window is padded to it; the step is ``int(roi * (1 - overlap))`` (at least 1,
    the whole window where image and window are the same size); ``ceil((size - roi) / step) + 1``
    windows per axis.
    """
    total = 1
    for s, r in zip(image_size, roi):
        size, r = max(int(s), int(r)), int(r)
        step = r if size == r else max(int(r * (1 - overlap)), 1)
        total *= 1 if size == r else math.ceil((size - r) / step) + 1
    return total


class WindowProgress:
    """Counts the windows of a sliding-window evaluation and logs, at most every ``every_s``
    seconds, the image, windows done of its total, the rate and the time left for the image; with
    ``images`` (the evaluation's count) also the images done and the time left overall, the images
    not started yet counted at the mean window count of those started so far."""

    def __init__(self, description: str = "sliding-window evaluation", every_s: float = 10.0,
                 images: int | None = None) -> None:
        self.description, self.every_s, self.images = description, float(every_s), images
        self.image_index, self.image_id, self.total, self.done = 0, "", 0, 0
        self.windows = 0
        self.started_windows = 0  # the window totals of the images started so far
        self._t0 = self._last = time.monotonic()

    def start_image(self, image_id: str, windows: int) -> None:
        self.image_index += 1
        self.image_id, self.total, self.done = image_id, int(windows), 0
        self.started_windows += int(windows)

    def left_overall(self, rate: float) -> float:
        """Seconds left for the whole evaluation at ``rate`` windows/s (``nan`` without ``images``)."""
        if not self.images or rate <= 0:
            return float("nan")
        mean = self.started_windows / max(self.image_index, 1)
        waiting = max(int(self.images) - self.image_index, 0) * mean
        return (self.total - self.done + waiting) / rate

    def advance(self, n: int) -> None:
        self.done += int(n)
        self.windows += int(n)
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            rate = self.windows / max(now - self._t0, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            of = f"/{self.images}" if self.images else ""
            overall = ""
            if self.images:
                finished = self.image_index - (1 if self.done < self.total else 0)
                overall = f"; {finished}/{self.images} images done, ~{self.left_overall(rate):.0f} s left overall"
            log.info("%s: image %d%s (%s), window %d/%d; %.2f windows/s; ~%.0f s left for this image%s",
                     self.description, self.image_index, of, self.image_id, self.done, self.total, rate, left,
                     overall)

    def finish(self) -> None:
        elapsed = time.monotonic() - self._t0
        if self.windows:
            log.info("%s: %d image(s), %d windows in %.1f s (%.2f windows/s)", self.description, self.image_index,
                     self.windows, elapsed, self.windows / max(elapsed, 1e-9))

    def counted(self, model: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
        """``model`` that counts the windows of every call (its batch dimension)."""

        def run(x: torch.Tensor) -> Any:
            out = model(x)
            self.advance(int(x.shape[0]))
            return out

        return run
