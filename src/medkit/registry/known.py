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


def provider_of(kind: str, name: str) -> str | None:
    """The distribution known to provide ``name`` of ``kind``, if any."""
    return KNOWN.get(kind, {}).get(name)
