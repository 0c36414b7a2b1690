"""medkit strategy ``ewc``: registration only (the strategy module is imported lazily)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import StrategySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_strategies(register: Callable[[Any], None]) -> None:
    register(StrategySpec("ewc", "medkit_plugin_ewc.strategy:EWC",
                          summary="elastic weight consolidation: diagonal Fisher of the pretext loss "
                                  "on the shared trunk (separate or online)"))
