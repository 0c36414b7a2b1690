"""medkit modality ``report``: registration only (the reader module is imported by its factory)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import ModalitySpec, hookimpl

MEDKIT_API_VERSION = "1.1"


@hookimpl
def medkit_register_modalities(register: Callable[[Any], None]) -> None:
    register(ModalitySpec("report", "medkit_plugin_report.modality:ReportModality",
                          summary="free-text radiology reports (.txt folders, CSV/JSONL columns, MIMIC-CXR sections)",
                          meta={"dims": 1, "default_tokenizer": "text_1d", "default_objective": "mlm"}))
