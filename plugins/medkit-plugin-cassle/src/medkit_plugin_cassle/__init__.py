"""medkit strategy ``cassle``: registration only (the strategy module is imported lazily)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import StrategySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_strategies(register: Callable[[Any], None]) -> None:
    register(StrategySpec("cassle", "medkit_plugin_cassle.strategy:CaSSLe",
                          summary="CaSSLe: predictor-based distillation to the frozen previous-stage "
                                  "encoder",
                          # what `push --include-strategy-state` may send: weights, never sample data
                          meta={"publishable_state": ["predictor", "teacher"]}))
