"""medkit strategy ``er`` (experience replay): registration only; the module is imported by the factory."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import StrategySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_strategies(register: Callable[[Any], None]) -> None:
    register(StrategySpec("er", "medkit_plugin_er.strategy:make_er",
                          summary="experience replay: seeded random (reservoir) buffer, "
                                  "pretext loss on replayed batches"))
