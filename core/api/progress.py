"""A small progress reporter interface the engine talks to; the CLI decides how it is shown."""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterable, Iterator, Protocol, TypeVar

log = logging.getLogger("medkit.progress")

T = TypeVar("T")

#: seconds between two lines of long work shown as log lines (:func:`work_reporter`)
WORK_INTERVAL_S = 10.0


class Reporter(Protocol):
    def start(self, total: int, description: str, completed: int = 0) -> None: ...

    def update(self, completed: int, metrics: dict[str, float]) -> None: ...

    def finish(self) -> None: ...


def format_seconds(seconds: float) -> str:
    """``"42s"``, ``"3m05s"``, ``"2h07m"``: a duration as a progress line shows it."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class WindowMeans:
    """The mean of each metric over the steps since the last :meth:`take` (the logging window).

    A step's record mixes loss kinds (an MLM step, an MAE step, a rehearsed batch's distillation step
    each carry their own term); the mean of each term is over the steps that carry it, so a line
    shows ``mae=`` and ``distill=`` side by side, never the last step's value alone. ``loss`` (the
    total, whatever the kind) is shown only when the steps carry no term of their own; ``lr`` (and any
    key in ``last``) is the latest value, not a mean.
    """

    def __init__(self, last: Iterable[str] = ("lr",), total: str = "loss") -> None:
        self.last, self.total = set(last), total
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._latest: dict[str, float] = {}

    def add(self, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                continue
            if key in self.last:
                self._latest[key] = float(value)
            else:
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
                self._counts[key] = self._counts.get(key, 0) + 1

    def peek(self) -> dict[str, float]:
        """The means so far of the window (in first-seen order, ``lr`` last), keeping it open."""
        means = {k: self._sums[k] / self._counts[k] for k in self._sums}
        if len(means) > 1:
            means.pop(self.total, None)
        means.update(self._latest)
        return means

    def take(self) -> dict[str, float]:
        """The window's means (as :meth:`peek`), and a new window."""
        means = self.peek()
        self._sums, self._counts, self._latest = {}, {}, {}
        return means


def show_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


class LogReporter:
    """Progress as log lines (the non-terminal fallback): a line every ``every`` steps, every
    ``interval_s`` seconds, and at the end, each with the rate and the time left; the metrics shown
    are each kind's mean over the steps since the previous line (:class:`WindowMeans`).

    Args:
        every: a line every this many steps (``None``: by time only).
        interval_s: also a line when this many seconds passed since the previous one (``None``: by
            count only).
        unit: what is counted (``"steps"``, ``"batches"``, ``"samples"``…).
    """

    def __init__(self, every: int | None = 10, *, interval_s: float | None = None, unit: str = "steps") -> None:
        self.every = max(1, every) if every is not None else None
        self.interval_s, self.unit = interval_s, unit
        self.total = 0
        self.description = ""
        self._t0 = self._last = time.monotonic()
        self._start_completed = 0
        self._window = WindowMeans()

    def start(self, total: int, description: str, completed: int = 0) -> None:
        self.total, self.description = total, description
        self._t0 = self._last = time.monotonic()
        self._start_completed, self._window = completed, WindowMeans()
        log.info("%s: %d %s%s", description, total, self.unit, f" (resuming at {completed})" if completed else "")

    def _due(self, completed: int, now: float) -> bool:
        if completed >= self.total:
            return True
        if self.every is not None and completed % self.every == 0:
            return True
        return self.interval_s is not None and now - self._last >= self.interval_s

    def update(self, completed: int, metrics: dict[str, float]) -> None:
        self._window.add(metrics)
        now = time.monotonic()
        if not self._due(completed, now):
            return
        self._last = now
        elapsed = max(now - self._t0, 1e-9)
        rate = (completed - self._start_completed) / elapsed
        if completed >= self.total:
            timing = f"done in {format_seconds(elapsed)}"
        else:
            left = (self.total - completed) / rate if rate > 0 else math.inf
            timing = f"{format_seconds(left)} left"
        shown = show_metrics(self._window.take())
        what = "step" if self.unit == "steps" else self.unit
        log.info("%s: %s %d/%d %s(%.3g %s/s, %s)", self.description, what, completed, self.total,
                 f"{shown} " if shown else "", rate, self.unit, timing)

    def finish(self) -> None:
        return None


class NullReporter:
    def start(self, total: int, description: str, completed: int = 0) -> None:
        return None

    def update(self, completed: int, metrics: dict[str, Any]) -> None:
        return None

    def finish(self) -> None:
        return None


def work_reporter(parent: Any, unit: str, interval_s: float | None = None) -> Reporter:
    """The reporter for one piece of long work (evaluation, a feature pass, k-means, ``prepare``):
    the run's own display where it is a bar (it shows any count, its rate and the time left),
    nothing where the run shows nothing (:class:`NullReporter`), else log lines every
    ``interval_s`` seconds (default :data:`WORK_INTERVAL_S`) counting ``unit``.

    Args:
        parent: the run's reporter (``ctx.reporter``, the engine's), or ``None``.
        unit: what the work counts (``"batches"``, ``"samples"``, ``"iterations"``, ``"parts"``).
    """
    if isinstance(parent, NullReporter):
        return parent
    if parent is not None and not isinstance(parent, LogReporter):
        return parent  # a bar
    return LogReporter(None, interval_s=WORK_INTERVAL_S if interval_s is None else interval_s, unit=unit)


def track(items: Iterable[T], reporter: Reporter | None, total: int, description: str,
          metrics: dict[str, float] | None = None) -> Iterator[T]:
    """Yield ``items``, reporting one unit of ``total`` done after each (``reporter`` ``None``: just
    yield them); the reporter is finished however the loop ends."""
    if reporter is None:
        yield from items
        return
    reporter.start(total, description)
    try:
        for done, item in enumerate(items, 1):
            yield item
            reporter.update(done, dict(metrics or {}))
    finally:
        reporter.finish()
