"""medkit observer ``tensorboard``: the run's event hooks, written as TensorBoard events.

Only the hooks live here; ``writer`` (which imports torch and tensorboard) is imported on the first
event, so loading the plugin keeps ``medkit --help`` fast.
"""

from __future__ import annotations

import os
from typing import Any

from medkit.api import hookimpl

MEDKIT_API_VERSION = "1.2"
#: Set to ``0`` (or ``false``/``off``/``no``) to switch the plugin off without uninstalling it.
ENV_SWITCH = "MEDKIT_TENSORBOARD"


def enabled() -> bool:
    """Whether the plugin writes events (``MEDKIT_TENSORBOARD`` unset or not a false value)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "off", "no"}


def _writers() -> Any:
    from medkit_plugin_tensorboard import writer

    return writer


@hookimpl
def medkit_on_run_start(run: Any) -> None:
    if enabled():
        _writers().run_start(run)


@hookimpl
def medkit_on_stage_start(run: Any, stage: Any) -> None:
    if enabled():
        _writers().stage_start(run, stage)


@hookimpl
def medkit_on_step_end(run: Any, stage: Any, step: int, metrics: dict[str, float], modality: str) -> None:
    if enabled():
        _writers().step_end(run, stage, step, metrics, modality)


@hookimpl
def medkit_on_stage_end(run: Any, stage: Any, metrics: dict[str, float]) -> None:
    if enabled():
        _writers().stage_end(run, stage, metrics)


@hookimpl
def medkit_on_run_end(run: Any, results: dict[str, Any]) -> None:
    if enabled():
        _writers().run_end(run, results)
