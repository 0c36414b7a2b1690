"""medkit.core: the runtime. Importing this package stays light (no torch)."""

from __future__ import annotations

from medkit.core.errors import CheckpointError, ConfigError, DataError, MedkitError, PluginError
from medkit.core.hookspecs import hookimpl
from medkit.core.specs import (
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
