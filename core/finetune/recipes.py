"""Fine-tuning recipes as a reader sees them: one canonical name each (with its aliases), the task,
modality, classes and public data set it expects, and what a run with a recipe really trained."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from medkit.config.store import ConfigHost
from medkit.finetune.config import load_recipe, recipe_names

log = logging.getLogger(__name__)


@dataclass
class RecipeInfo:
    """One recipe under its canonical name (the ``name`` its values carry)."""

    name: str
    task: str
    modality: str
    classes: list[str]
    dataset: str
    aliases: list[str] = field(default_factory=list)


def list_recipes(host: ConfigHost) -> list[RecipeInfo]:
    """Every installed recipe once, sorted by name; a name registered for another recipe's values
    (a misspelling kept for old commands) is listed as that recipe's alias."""
    found: dict[str, RecipeInfo] = {}
    aliases: dict[str, list[str]] = {}
    for registered in recipe_names(host):
        values = load_recipe(registered, host)
        canonical = str(values.get("name") or registered)
        if canonical != registered:
            aliases.setdefault(canonical, []).append(registered)
            continue
        found[canonical] = RecipeInfo(name=canonical, task=str(values.get("task", "?")),
                                      modality=str(values.get("modality", "?")),
                                      classes=[str(c) for c in values.get("classes") or []],
                                      dataset=str(values.get("dataset") or "?"))
    for canonical, names in aliases.items():
        if canonical in found:
            found[canonical].aliases = sorted(names)
    return [found[n] for n in sorted(found)]


def format_recipes(host: ConfigHost) -> str:
    """The table ``medkit finetune --list-recipes`` prints: one recipe a line."""
    rows = [("recipe", "task", "modality", "classes", "expects data set")]
    for r in list_recipes(host):
        name = r.name + (f" (alias {', '.join(r.aliases)})" if r.aliases else "")
        rows.append((name, r.task, r.modality, ", ".join(r.classes) or "?", r.dataset))
    if len(rows) == 1:
        return "no recipes installed (they come from medkit-plugin-classification and medkit-plugin-segmentation)"
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in rows)


def recipe_classes_check(cfg: dict[str, Any], class_names: Sequence[str], *, demo: bool,
                         host: ConfigHost) -> dict[str, Any] | None:
    """What a run with ``--recipe`` really trained, logged as a warning where it is not the recipe's
    data set: built-in demo data, or classes other than the recipe's. ``None`` without a recipe."""
    name = cfg.get("run", {}).get("recipe")
    if not name:
        return None
    recipe = load_recipe(str(name), host)
    expected = [str(c) for c in recipe.get("classes") or []]
    trained = [str(c) for c in class_names]
    dataset = str(recipe.get("dataset") or name)
    record: dict[str, Any] = {"recipe": str(recipe.get("name") or name), "dataset": dataset,
                              "recipe_classes": expected, "trained_classes": trained, "demo_data": bool(demo),
                              "classes_match": trained == expected}
    if demo:
        record["note"] = (f"recipe {name} expects {dataset} (classes {', '.join(expected)}), but this run "
                          f"trained on medkit's built-in demo data: its classes are {', '.join(trained)}, and "
                          f"its scores say nothing about {dataset}; give --data to train on {dataset}")
    elif expected and trained != expected:
        record["note"] = (f"recipe {name} names the classes {', '.join(expected)} ({dataset}), but the data "
                          f"hold {', '.join(trained)}: the run trained and reports the data's classes")
    if "note" in record:
        log.warning("%s", record["note"])
    return record


def run_notes(cfg: dict[str, Any], task: Any, class_names: Sequence[str], *, demo: bool,
              host: ConfigHost) -> dict[str, Any]:
    """What a fine-tune records about its data beside its metrics: the task's ``data_summary``
    (segmentation: label values with voxel counts, the patch chosen) and the recipe check."""
    notes: dict[str, Any] = {}
    summary = getattr(task, "data_summary", None)
    if summary:
        notes["data"] = dict(summary)
    check = recipe_classes_check(cfg, class_names, demo=demo, host=host)
    if check is not None:
        notes["recipe"] = check
    return notes
