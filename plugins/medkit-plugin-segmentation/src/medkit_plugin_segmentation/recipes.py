"""Named fine-tuning recipes of the segmentation datasets (supplement Table 1)."""

from __future__ import annotations

from typing import Any

_COMMON = {"task": "segmentation", "loss": "Dice + CE", "optimizer": "AdamW", "iterations": 25000}
#: ``iterations``, ``lr`` and ``batch_size`` are Table 1's; ``epochs`` is ``run_ds.sh``'s
#: (× 250 iterations each); ``input_size`` is the training patch and sliding-window tile.
RECIPES: dict[str, dict[str, Any]] = {
    "qata": dict(_COMMON, dataset="QaTa-COV19 v2", modality="xray", dims=2, input_size=[224, 224], lr=1e-4,
                 batch_size=16, epochs=100, num_classes=2, classes=["background", "infection"],
                 task_options={"num_classes": 2},
                 notes="COVID-19 infected region; official train/test, 20% of train as validation"),
    "lits": dict(_COMMON, dataset="LiTS", modality="ct", dims=3, input_size=[64, 192, 192], lr=1e-4, batch_size=2,
                 epochs=100, num_classes=3, classes=["background", "liver", "tumour"], loss="Dice + BCE (sigmoid)",
                 task_options={"num_classes": 3, "multilabel": True},
                 notes="2 sigmoid channels: liver (incl. tumour) and tumour; nnU-Net v1 preprocessing"),
    "vs": dict(_COMMON, dataset="Vestibular-Schwannoma-SEG", modality="mri", dims=3, input_size=[64, 192, 192],
               lr=1e-4, batch_size=2, epochs=100, num_classes=2, classes=["background", "schwannoma"],
               task_options={"num_classes": 2}, notes="nnU-Net v1 preprocessing; 80/20 split"),
    "la": dict(_COMMON, dataset="LA (left atrium, UA-MT)", modality="mri", dims=3, input_size=[64, 192, 192],
               lr=5e-5, batch_size=2, epochs=80, num_classes=2, classes=["background", "left_atrium"],
               task_options={"num_classes": 2}, notes="UA-MT mri_norm2.h5 data; random crops"),
    "glas": dict(_COMMON, dataset="GlaS", modality="pathology", dims=2, input_size=[512, 512], lr=1e-4,
                 batch_size=4, epochs=100, num_classes=2, classes=["background", "gland"],
                 task_options={"num_classes": 2}, notes="images resized to 512x512; 20% of train as validation"),
}


def register_recipes(store: Any) -> None:
    """Add every recipe to medkit's store under group ``recipe``."""
    from hydra_zen import make_config

    for name, values in RECIPES.items():
        store(make_config(**dict(values, name=name)), group="recipe", name=name)
