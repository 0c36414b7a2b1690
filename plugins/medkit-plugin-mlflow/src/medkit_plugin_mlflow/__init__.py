"""medkit observer ``mlflow``: the run's event hooks, logged as an MLflow run.

Only the hooks live here; ``logger`` (which imports mlflow) is imported on the first event, so loading
the plugin keeps ``medkit --help`` fast.
"""

from __future__ import annotations

import os
from typing import Any

from medkit.api import hookimpl

MEDKIT_API_VERSION = "1.2"
#: ``1`` switches the plugin on, ``0`` off; unset, it is on when MLflow is configured in the
#: environment (``MLFLOW_TRACKING_URI`` or ``MLFLOW_EXPERIMENT_NAME``).
ENV_SWITCH = "MEDKIT_MLFLOW"
CONFIGURED_BY = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")


def enabled() -> bool:
    """Whether the plugin logs (see :data:`ENV_SWITCH`)."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if value:
        return value not in {"0", "false", "off", "no"}
    return any(os.environ.get(k) for k in CONFIGURED_BY)


def _logger() -> Any:
    from medkit_plugin_mlflow import logger

    return logger


@hookimpl
def medkit_on_run_start(run: Any) -> None:
    if enabled():
        _logger().run_start(run)


@hookimpl
def medkit_on_stage_start(run: Any, stage: Any) -> None:
    if enabled():
        _logger().stage_start(run, stage)


@hookimpl
def medkit_on_step_end(run: Any, stage: Any, step: int, metrics: dict[str, float], modality: str) -> None:
    if enabled():
        _logger().step_end(run, stage, step, metrics, modality)


@hookimpl
def medkit_on_stage_end(run: Any, stage: Any, metrics: dict[str, float]) -> None:
    if enabled():
        _logger().stage_end(run, stage, metrics)


@hookimpl
def medkit_on_run_end(run: Any, results: dict[str, Any]) -> None:
    if enabled():
        _logger().run_end(run, results)
