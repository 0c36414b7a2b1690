"""Which distribution provides which built-in name, for install hints."""

from __future__ import annotations

#: kind -> name -> distribution that provides it.
KNOWN: dict[str, dict[str, str]] = {
    "modality": {
        "report": "medkit-plugin-report", "xray": "medkit-plugin-xray", "ct": "medkit-plugin-ct",
        "mri": "medkit-plugin-mri", "pathology": "medkit-plugin-pathology",
    },
    "tokenizer": {"text_1d": "medkit-plugin-tokenizers", "patch_2d": "medkit-plugin-tokenizers",
                  "patch_3d": "medkit-plugin-tokenizers"},
    "objective": {"mae": "medkit-plugin-mae", "mlm": "medkit-plugin-mlm"},
    "strategy": {
        "rehearsal": "medkit-plugin-medcoss", "er": "medkit-plugin-er", "ewc": "medkit-plugin-ewc",
        "packnet": "medkit-plugin-packnet", "cassle": "medkit-plugin-cassle",
        "sequential": "medkit", "joint": "medkit", "tfs": "medkit",
    },
    "task": {"classification": "medkit-plugin-classification",
             "segmentation": "medkit-plugin-segmentation"},
}


#: the default (tokenizer, objective) of each built-in modality, to name every missing piece at once
#: when the modality's own plugin is missing too (each modality plugin depends on both).
MODALITY_DEFAULTS: dict[str, tuple[str, str]] = {
    "report": ("text_1d", "mlm"), "xray": ("patch_2d", "mae"), "pathology": ("patch_2d", "mae"),
    "ct": ("patch_3d", "mae"), "mri": ("patch_3d", "mae"),
}
#: every built-in plugin distribution (the host's ``all`` extra and the ``medkit-default`` set)
DEFAULT_PLUGINS: tuple[str, ...] = (
    "medkit-plugin-tokenizers", "medkit-plugin-mae", "medkit-plugin-mlm", "medkit-plugin-report",
    "medkit-plugin-xray", "medkit-plugin-ct", "medkit-plugin-mri", "medkit-plugin-pathology",
    "medkit-plugin-medcoss", "medkit-plugin-er", "medkit-plugin-ewc", "medkit-plugin-packnet",
    "medkit-plugin-cassle", "medkit-plugin-classification", "medkit-plugin-segmentation",
    "medkit-plugin-tensorboard",
)
ALL_INSTALL = 'pip install "medkit[all]"'


def provider_of(kind: str, name: str) -> str | None:
    """The distribution known to provide ``name`` of ``kind``, if any."""
    return KNOWN.get(kind, {}).get(name)
