"""medkit objective ``mlm``: registration only (the module is imported lazily by its factory)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import ObjectiveSpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_objectives(register: Callable[[Any], None]) -> None:
    register(ObjectiveSpec("mlm", "medkit_plugin_mlm.objective:MLMObjective", context=("encoder", "tokenizer"),
                           summary="whole-word masked language modelling (15 %, 80/10/10), bidirectional",
                           meta={"dims": [1]}))
