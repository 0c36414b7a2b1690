"""A small progress reporter interface the engine talks to; the CLI decides how it is shown."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

log = logging.getLogger("medkit.progress")


class Reporter(Protocol):
    def start(self, total: int, description: str, completed: int = 0) -> None: ...

    def update(self, completed: int, metrics: dict[str, float]) -> None: ...

    def finish(self) -> None: ...


class LogReporter:
    """Progress as log lines every ``every`` steps (and at the end): the non-terminal fallback."""

    def __init__(self, every: int = 10) -> None:
        self.every = max(1, every)
        self.total = 0
        self.description = ""
        self._t0 = time.monotonic()

    def start(self, total: int, description: str, completed: int = 0) -> None:
        self.total, self.description, self._t0 = total, description, time.monotonic()
        log.info("%s: %d steps%s", description, total, f" (resuming at {completed})" if completed else "")

    def update(self, completed: int, metrics: dict[str, float]) -> None:
        if completed % self.every == 0 or completed == self.total:
            rate = completed / max(time.monotonic() - self._t0, 1e-9)
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
            log.info("%s: step %d/%d %s (%.2f steps/s)", self.description, completed, self.total, shown, rate)

    def finish(self) -> None:
        return None


class NullReporter:
    def start(self, total: int, description: str, completed: int = 0) -> None:
        return None

    def update(self, completed: int, metrics: dict[str, Any]) -> None:
        return None

    def finish(self) -> None:
        return None
