"""medkit observer ``tensorboard``: the run's event hooks, written as TensorBoard events.

Only the hooks live here; ``writer`` (which imports torch and tensorboard) is imported on the first
event, so loading the plugin keeps ``medkit --help`` fast.
"""

from __future__ import annotations

import os

from medkit.api import observer_hooks

MEDKIT_API_VERSION = "1.2"
#: Set to ``0`` (or ``false``/``off``/``no``) to switch the plugin off without uninstalling it.
ENV_SWITCH = "MEDKIT_TENSORBOARD"


def enabled() -> bool:
    """Whether the plugin writes events (``MEDKIT_TENSORBOARD`` unset or not a false value)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "off", "no"}


(medkit_on_run_start, medkit_on_stage_start, medkit_on_step_end, medkit_on_stage_end,
 medkit_on_run_end) = observer_hooks(enabled, "medkit_plugin_tensorboard.writer")
