"""medkit observer ``mlflow``: the run's event hooks, logged as an MLflow run.

Only the hooks live here; ``logger`` (which imports mlflow) is imported on the first event, so loading
the plugin keeps ``medkit --help`` fast.
"""

from __future__ import annotations

import os

from medkit.api import observer_hooks

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


(medkit_on_run_start, medkit_on_stage_start, medkit_on_step_end, medkit_on_stage_end,
 medkit_on_run_end) = observer_hooks(enabled, "medkit_plugin_mlflow.logger")
