"""medkit plugin: the ``xray`` modality (2D radiographs, grey replicated to 3 channels)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import ModalitySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_modalities(register: Callable[[Any], None]) -> None:
    register(ModalitySpec("xray", "medkit_plugin_xray.modality:XrayModality",
                          summary="2D X-rays (PNG/JPEG/TIFF, DICOM), frontal-view filter, 3×224×224 in [0, 1]",
                          meta={"dims": 2, "default_tokenizer": "patch_2d", "default_objective": "mae"}))
