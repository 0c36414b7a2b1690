"""The report modality satisfies the modality contract."""

from __future__ import annotations

from medkit.core.testing import ModalityContract


class TestReportModality(ModalityContract):
    name = "report"
