"""The report modality satisfies the modality contract."""

from __future__ import annotations

from medkit.testing import ModalityContract


class TestReportModality(ModalityContract):
    name = "report"
