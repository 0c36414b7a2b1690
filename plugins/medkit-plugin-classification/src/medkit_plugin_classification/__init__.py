"""medkit task ``classification``: registration only (the task module is imported by its factory)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import TaskSpec, hookimpl

MEDKIT_API_VERSION = "1.3"


@hookimpl
def medkit_register_tasks(register: Callable[[Any], None]) -> None:
    register(TaskSpec("classification", "medkit_plugin_classification.task:ClassificationTask",
                      summary="1D/2D/3D classification: one- or two-layer MLP head, CE, ACC/AUC/F1",
                      context=("dims", "modality"), meta={"dims": [1, 2, 3]}))


@hookimpl
def medkit_register_configs(store: Any) -> None:
    # Recipes of supplement Table 1: pubmed20k (alias pudmed20k), chestxr, ricord, nch.
    from medkit_plugin_classification.recipes import register_recipes

    register_recipes(store)
