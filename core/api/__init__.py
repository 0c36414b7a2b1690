"""medkit.api: what plugins import — errors, specs, hooks, protocols, batches and the run context. Light (no torch)."""

from __future__ import annotations

from medkit.api.errors import CheckpointError, ConfigError, DataError, MedkitError, PluginError
from medkit.api.hookspecs import hookimpl
from medkit.api.specs import (
    ModalitySpec,
    ObjectiveSpec,
    StrategySpec,
    TaskSpec,
    TokenizerSpec,
)

#: The host plugin API version. A plugin sets ``MEDKIT_API_VERSION`` in the module its entry point
#: names; a plugin written for another major version is refused.
API_VERSION = 1

__all__ = [
    "API_VERSION", "CheckpointError", "ConfigError", "DataError", "MedkitError", "ModalitySpec",
    "ObjectiveSpec", "PluginError", "StrategySpec", "TaskSpec", "TokenizerSpec", "hookimpl",
]
