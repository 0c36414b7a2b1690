"""Named fine-tuning recipes of the classification datasets (supplement Table 1, A.1)."""

from __future__ import annotations

from typing import Any

#: One dict per dataset. ``iterations`` and ``batch_size`` and ``lr`` are Table 1's; ``epochs`` is
#: what ``run_ds.sh`` sets; ``input_size`` is the patch size (text: tokens).
RECIPES: dict[str, dict[str, Any]] = {
    "pubmed20k": {
        "dataset": "PubMed 20k RCT", "task": "classification", "modality": "report", "dims": 1,
        "input_size": [112], "loss": "CE", "optimizer": "AdamW", "lr": 2e-4, "batch_size": 64,
        "iterations": 14065, "epochs": 5, "num_classes": 5,
        "classes": ["BACKGROUND", "CONCLUSIONS", "METHODS", "OBJECTIVE", "RESULTS"],
        "task_options": {"head": "two_layer", "num_classes": 5, "fc_norm": False},
        "notes": "sentence role; official train/dev/test files; validate every 500 iterations",
    },
    "chestxr": {
        "dataset": "ChestXR (COVID-19 CXR)", "task": "classification", "modality": "xray", "dims": 2,
        "input_size": [224, 224], "loss": "CE", "optimizer": "AdamW", "lr": 5e-5, "batch_size": 32,
        "iterations": 35840, "epochs": 80, "num_classes": 3, "classes": ["covid", "normal", "pneumonia"],
        "task_options": {"head": "one_layer", "num_classes": 3},
        "notes": "official train/test; 20% of train (per class) as validation",
    },
    "ricord": {
        "dataset": "RICORD (1A+1B)", "task": "classification", "modality": "ct", "dims": 3,
        "input_size": [64, 192, 192], "loss": "CE", "optimizer": "AdamW", "lr": 1e-5, "batch_size": 8,
        "iterations": 9600, "epochs": 200, "num_classes": 2, "classes": ["covid", "normal"],
        "task_options": {"head": "two_layer", "num_classes": 2, "clip": [-1024.0, 325.0], "normalize": "zscore"},
        "notes": "binary AUC on P(class 1), binary F1; splits 194/52/84 volumes",
    },
    "nch": {
        "dataset": "NCT-CRC-HE-100K -> CRC-VAL-HE-7K", "task": "classification", "modality": "pathology",
        "dims": 2, "input_size": [224, 224], "loss": "CE", "optimizer": "AdamW", "lr": 1e-4, "batch_size": 32,
        "iterations": 24990, "epochs": 10, "num_classes": 9,
        "classes": ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"],
        "task_options": {"head": "one_layer", "num_classes": 9},
        "notes": "train NCT-CRC-HE-100K (20% per class as validation), test CRC-VAL-HE-7K",
    },
}
#: accepted names listed under their recipe (``pudmed20k``: the reference code's spelling)
ALIASES = {"pudmed20k": "pubmed20k"}


def register_recipes(store: Any) -> None:
    """Add every recipe (and alias) to medkit's store under group ``recipe``."""
    from hydra_zen import make_config

    for alias, target in [(n, n) for n in RECIPES] + list(ALIASES.items()):
        values = dict(RECIPES[target], name=target)
        store(make_config(**values), group="recipe", name=alias)
