"""medkit observer ``wandb``: the run's event hooks, logged as a Weights & Biases run.

Only the hooks live here; ``logger`` (which imports wandb) is imported on the first event, so loading
the plugin keeps ``medkit --help`` fast.
"""

from __future__ import annotations

import os

from medkit.api import observer_hooks

MEDKIT_API_VERSION = "1.2"
#: ``1`` switches the plugin on, ``0`` off; unset, it is on when W&B is configured in the
#: environment (``WANDB_PROJECT`` or ``WANDB_MODE``).
ENV_SWITCH = "MEDKIT_WANDB"
CONFIGURED_BY = ("WANDB_PROJECT", "WANDB_MODE")


def enabled() -> bool:
    """Whether the plugin logs (see :data:`ENV_SWITCH`)."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if value:
        return value not in {"0", "false", "off", "no"}
    return any(os.environ.get(k) for k in CONFIGURED_BY)


(medkit_on_run_start, medkit_on_stage_start, medkit_on_step_end, medkit_on_stage_end,
 medkit_on_run_end) = observer_hooks(enabled, "medkit_plugin_wandb.logger")
