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

# -- the ``backbone`` plugin kind (medkit_register_backbones): its spec, and the torch-based helpers a
# backbone plugin builds on, imported on first use so that ``import medkit.api`` stays light (no torch).
from medkit.api.specs import BackboneSpec  # noqa: E402

_LAZY: dict[str, str] = {
    "ExternalBackbone": "medkit.finetune.external.base", "Family": "medkit.finetune.external.base",
    "StateDict": "medkit.finetune.external.base", "entry": "medkit.finetune.external.base",
    "load_into": "medkit.finetune.external.base", "resize_to": "medkit.finetune.external.base",
    "split_keys": "medkit.finetune.external.base", "default_blocks": "medkit.finetune.backbones",
}


def __getattr__(name: str) -> object:
    """The backbone helpers of :data:`_LAZY`, imported when first asked for (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'medkit.api' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ += ["BackboneSpec", *_LAZY]
