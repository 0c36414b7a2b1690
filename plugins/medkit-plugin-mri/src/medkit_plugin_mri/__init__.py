"""medkit-plugin-mri: the ``mri`` modality (3D MR volumes from NIfTI files and DICOM series)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import ModalitySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_modalities(register: Callable[[Any], None]) -> None:
    register(ModalitySpec("mri", "medkit_plugin_mri.modality:MRIModality",
                          summary=("MRI volumes (NIfTI, DICOM series): "
                                   "16-slice windows, percentile clip + z-score"),
                          meta={"dims": 3, "default_tokenizer": "patch_3d", "default_objective": "mae"}))
