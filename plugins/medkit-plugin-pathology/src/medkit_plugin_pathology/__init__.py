"""medkit plugin: the ``pathology`` modality (RGB histology images tiled into 224×224 samples)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import ModalitySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_modalities(register: Callable[[Any], None]) -> None:
    register(ModalitySpec("pathology", "medkit_plugin_pathology.modality:PathologyModality",
                          summary="RGB histology (PNG/JPEG/TIFF tiles; SVS/NDPI/MRXS/pyramidal TIFF/DICOM-WSI "
                                  "slides) tiled 512→224, tissue filter, ≤100 tiles/patient",
                          meta={"dims": 2, "default_tokenizer": "patch_2d", "default_objective": "mae"}))
