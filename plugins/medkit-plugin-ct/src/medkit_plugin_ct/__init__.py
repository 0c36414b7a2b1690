"""medkit-plugin-ct: the ``ct`` modality (3D CT volumes from NIfTI files and DICOM series)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import ModalitySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_modalities(register: Callable[[Any], None]) -> None:
    register(ModalitySpec("ct", "medkit_plugin_ct.modality:CTModality",
                          summary=("CT volumes (NIfTI, DICOM series): "
                                   "HU window, 1 mm slices, 16-slice windows"),
                          meta={"dims": 3, "default_tokenizer": "patch_3d", "default_objective": "mae"}))
