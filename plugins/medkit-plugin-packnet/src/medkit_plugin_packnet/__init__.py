"""medkit strategy ``packnet``: registration only (the strategy module is imported lazily)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import StrategySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_strategies(register: Callable[[Any], None]) -> None:
    register(StrategySpec("packnet", "medkit_plugin_packnet.strategy:PackNet",
                          summary="iterative magnitude pruning: each stage owns a disjoint subset of "
                                  "the trunk's Linear weights",
                          # what `push --include-strategy-state` may send: weights, never sample data
                          meta={"publishable_state": ["owner"]}))
