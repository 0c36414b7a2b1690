"""Shared CLI pieces: logging setup, the selection options of run/config show, progress."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import Any, Callable

import click

_SELECTION_OPTIONS = [
    click.option("--modality", "modality", multiple=True,
                 help="Modality of each stage, in order (repeat or comma-separate)."),
    click.option("--strategy", default="sequential", show_default=True, help="Continual strategy."),
    click.option("--data", "data", multiple=True,
                 help="Data folder: PATH for a single modality, or MODALITY=PATH (repeatable)."),
    click.option("--preset", type=click.Choice(["tiny", "small", "base"]), default="base",
                 show_default=True, help="Encoder size (tiny trains in seconds on a CPU)."),
    click.option("--max-steps", type=int, default=None, help="Optimizer steps per stage."),
    click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
    click.argument("overrides", nargs=-1),
]


def selection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_SELECTION_OPTIONS):
        fn = option(fn)
    return fn


def make_selection(modality: tuple[str, ...], strategy: str, data: tuple[str, ...], preset: str,
                   max_steps: int | None, seed: int, overrides: tuple[str, ...]) -> Any:
    from medkit.config.compose import Selection, parse_data, parse_modalities
    from medkit.api.errors import ConfigError

    mods = parse_modalities(modality)
    if not mods:
        raise ConfigError("select at least one modality, e.g. --modality ct (see medkit plugins list)")
    return Selection(modalities=mods, strategy=strategy, preset=preset, data=parse_data(data, mods),
                     seed=seed, max_steps=max_steps, overrides=list(overrides))


#: How every log line starts: local time, ISO 8601 with milliseconds (``2026-12-01T23:10:00.123``).
LOG_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


class _Formatter(logging.Formatter):
    """``<time> message``, or ``<time> warning: message`` (``error:``...) from WARNING up."""

    default_time_format = LOG_TIME_FORMAT
    default_msec_format = "%s.%03d"

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record)
        if record.levelno >= logging.WARNING:
            return f"{stamp} {record.levelname.lower()}: {record.getMessage()}"
        return f"{stamp} {record.getMessage()}"


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    return f"{message} ({category.__name__})"


class _OnceFromPydicom(logging.Filter):
    """pydicom's ``warn_and_log()`` sends each warning twice, first as a record of the ``pydicom``
    logger, then as a Python warning: drop the Python warning that repeats a record just shown."""

    def __init__(self) -> None:
        super().__init__()
        self.recent: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "pydicom":
            self.recent = (self.recent + [record.getMessage()])[-32:]
        elif record.name == "py.warnings":
            text = record.getMessage()
            if any(text.startswith(m) for m in self.recent):
                return False
        return True


def setup_logging(level: int = logging.INFO) -> None:
    """The CLI is the only place that configures logging: medkit's and its plugins' messages
    (loggers ``medkit.*`` and ``medkit_plugin_*``) at ``level`` on stderr, other libraries' at WARNING,
    each line led by its local time (``2026-12-01T23:10:00.123 stage 1/2 done: ...``).

    Python warnings go through the same handler as one ``warning: ...`` line each. Under torchrun
    (``RANK`` > 0) a process logs warnings and errors only, so rank 0 alone tells the story.
    """
    if int(os.environ.get("RANK", "0") or 0) > 0:
        level = max(level, logging.WARNING)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_medkit", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    handler.addFilter(lambda r: r.levelno >= logging.WARNING or r.name.startswith("medkit"))
    handler.addFilter(_OnceFromPydicom())
    handler._medkit = True  # type: ignore[attr-defined]  # our marker on a stdlib handler (found again later)
    root.addHandler(handler)
    root.setLevel(level)
    warnings.formatwarning = _one_line_warning
    logging.captureWarnings(True)
    # MONAI warns on every DICOM read that an optional GPU decoder is absent: not actionable here
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


class RichReporter:
    """A progress bar on a terminal (rich); the metrics shown are each kind's mean over the last
    ``window`` steps (:class:`medkit.api.progress.WindowMeans`), not the last step's values."""

    def __init__(self, window: int = 10) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from medkit.api.progress import WindowMeans

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
                                 transient=False)
        self.task: Any = None
        self.window, self._means, self._shown, self._total = max(1, window), WindowMeans(), "", 0

    def start(self, total: int, description: str, completed: int = 0) -> None:
        from medkit.api.progress import WindowMeans

        self.progress.start()
        self.task = self.progress.add_task(description, total=total, completed=completed, metrics="")
        self._means, self._shown, self._total = WindowMeans(), "", total

    def update(self, completed: int, metrics: dict[str, float]) -> None:
        from medkit.api.progress import show_metrics

        self._means.add(metrics)
        if completed % self.window == 0 or completed >= self._total:
            self._shown = show_metrics(self._means.take())
        elif not self._shown:  # before the first full window: its means so far
            self._shown = show_metrics(self._means.peek())
        self.progress.update(self.task, completed=completed, metrics=self._shown)

    def finish(self) -> None:
        self.progress.stop()


def make_reporter(log_every: int) -> Any:
    from medkit.api.progress import LogReporter

    if sys.stderr.isatty():
        try:
            return RichReporter(window=log_every)
        except ImportError:  # pragma: no cover
            pass
    return LogReporter(every=log_every)


def default_run_dir(strategy: str, modalities: list[str]) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"runs/{stamp}-{strategy}-{'-'.join(modalities)}"
