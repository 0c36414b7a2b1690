"""What no loaded spec can say: the built-in names of plugins that are missing, and the full install."""

from __future__ import annotations

# Everything a loaded plugin provides comes from its specs (PluginHost.registries); these tables only
# answer for a plugin that is *not* loaded (not installed, disabled, not selected, or broken at
# import), when no spec exists to ask: which distribution to install or repair for a name the user
# typed, and what a missing modality would have needed. The host's own builtin plugin always loads,
# so its names (sequential, joint, tfs) are not restated here.

#: kind -> name -> distribution that provides it (install hints and "did you mean" for missing plugins).
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
    },
    "task": {"classification": "medkit-plugin-classification",
             "segmentation": "medkit-plugin-segmentation"},
    "backbone": {name: "medkit-plugin-backbones" for name in ("desd", "pcrlv2-2d", "pcrlv2-3d", "path-dino",
                                                               "unimiss")},
}


#: the default (tokenizer, objective) of each built-in modality, used only when the modality's own
#: plugin is missing too (its spec's meta says it otherwise), to name every missing piece at once.
MODALITY_DEFAULTS: dict[str, tuple[str, str]] = {
    "report": ("text_1d", "mlm"), "xray": ("patch_2d", "mae"), "pathology": ("patch_2d", "mae"),
    "ct": ("patch_3d", "mae"), "mri": ("patch_3d", "mae"),
}
#: every built-in plugin distribution (the host's ``all`` extra and the ``medkit-default`` set): what
#: ``medkit doctor`` reports missing, which no installed plugin can know.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "medkit-plugin-tokenizers", "medkit-plugin-mae", "medkit-plugin-mlm", "medkit-plugin-report",
    "medkit-plugin-xray", "medkit-plugin-ct", "medkit-plugin-mri", "medkit-plugin-pathology",
    "medkit-plugin-medcoss", "medkit-plugin-er", "medkit-plugin-ewc", "medkit-plugin-packnet",
    "medkit-plugin-cassle", "medkit-plugin-classification", "medkit-plugin-segmentation",
    "medkit-plugin-tensorboard", "medkit-plugin-wandb", "medkit-plugin-mlflow", "medkit-plugin-backbones",
)
ALL_INSTALL = 'pip install "medkit[all]"'


def provider_of(kind: str, name: str) -> str | None:
    """The distribution known to provide ``name`` of ``kind`` when its plugin is not loaded, if any."""
    return KNOWN.get(kind, {}).get(name)
