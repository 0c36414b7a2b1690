"""medkit objective ``mae``: registration only (the module is imported lazily by its factory)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import ObjectiveSpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_objectives(register: Callable[[Any], None]) -> None:
    register(ObjectiveSpec("mae", "medkit_plugin_mae.objective:MAEObjective", context=("encoder", "tokenizer"),
                           summary="masked autoencoding of 2D/3D patches (mask 0.75, norm-pix loss)",
                           meta={"dims": [2, 3]}))
