"""medkit strategy ``rehearsal`` (MedCoSS): registration only; the modules are imported by the factory."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import StrategySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_strategies(register: Callable[[Any], None]) -> None:
    register(StrategySpec("rehearsal", "medkit_plugin_medcoss.strategy:make_rehearsal",
                          summary="MedCoSS: k-means rehearsal buffer + intra-modal mixup + feature distillation",
                          # what `push --include-strategy-state` may send: weights, never sample data
                          meta={"publishable_state": ["teacher"]}))
