"""The host's own components, registered through the same hooks as any plugin."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api.hookspecs import hookimpl
from medkit.api.specs import StrategySpec

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_strategies(register: Callable[[Any], None]) -> None:
    register(StrategySpec("sequential", "medkit.strategies.reference:make_sequential",
                          summary="stages in order, no protection against forgetting"))
    register(StrategySpec("joint", "medkit.strategies.reference:make_joint",
                          summary="all modalities in one stage (upper reference)"))
    register(StrategySpec("tfs", "medkit.strategies.reference:make_tfs",
                          summary="no pre-training (downstream baseline)"))
