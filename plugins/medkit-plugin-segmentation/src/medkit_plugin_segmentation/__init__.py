"""medkit task ``segmentation``: registration only (the task module is imported by its factory)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import TaskSpec, hookimpl

MEDKIT_API_VERSION = "1.3"


@hookimpl
def medkit_register_tasks(register: Callable[[Any], None]) -> None:
    register(TaskSpec("segmentation", "medkit_plugin_segmentation.task:SegmentationTask",
                      summary="2D/3D segmentation: UNETR decoder on trunk blocks, Dice+CE, Dice/HD95, sliding window",
                      context=("dims", "modality"), meta={"dims": [2, 3]}))


@hookimpl
def medkit_register_configs(store: Any) -> None:
    # Recipes of supplement Table 1: qata, lits, vs, la, glas.
    from medkit_plugin_segmentation.recipes import register_recipes

    register_recipes(store)
