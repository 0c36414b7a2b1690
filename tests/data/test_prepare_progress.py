"""``medkit prepare`` shows how far it is: parts written, the rate and the time left."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from medkit.api import progress
from medkit.data.prepare import prepare
from medkit.registry import create, reset_host


def test_prepare_reports_parts_rate_and_time_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    reset_host()
    mod = create("modality", "xray")
    data = Path(mod.demo_data(tmp_path / "demo"))
    monkeypatch.setattr(progress, "WORK_INTERVAL_S", 0.0)  # a line per part
    caplog.set_level(logging.INFO, logger="medkit.progress")
    summary = prepare(mod, data, tmp_path / "p", part_size=16)
    lines = [r.getMessage() for r in caplog.records if r.name == "medkit.progress"]
    assert summary.written >= 2 and lines[0] == f"prepare xray: {summary.written} parts"
    assert re.fullmatch(rf"prepare xray: parts 1/{summary.written} \([\d.e+-]+ parts/s, \S+ left\)", lines[1]), lines
    assert lines[-1].startswith(f"prepare xray: parts {summary.written}/{summary.written} (") and "done in" in lines[-1]
