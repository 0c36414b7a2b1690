"""Hub transfers show progress: huggingface_hub's own bars are on (unless the user switched them off),
and each transfer ends with one line giving its size and rate."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medkit.hub.transfer import enable_hub_progress, size_of, transfer


@pytest.fixture()
def bars():
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was = are_progress_bars_disabled()
    yield disable_progress_bars
    (disable_progress_bars if was else enable_progress_bars)()


def test_bars_another_library_switched_off_come_back(bars, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.utils import are_progress_bars_disabled

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    bars()  # as a library that silences huggingface_hub would
    assert are_progress_bars_disabled()
    assert enable_hub_progress() is True
    assert not are_progress_bars_disabled()


def test_the_users_switch_is_kept(bars, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.utils import are_progress_bars_disabled

    bars()
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    assert enable_hub_progress() is False
    assert are_progress_bars_disabled()


def test_a_transfer_ends_with_its_size_and_rate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="medkit.hub.transfer")
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    files[0].write_bytes(b"x" * 1_500_000)
    files[1].write_bytes(b"y" * 500_000)
    assert size_of([*files, tmp_path / "missing"]) == 2_000_000
    with transfer("fetched hf-hub:org/model") as counts:
        counts.update(files=2, bytes=size_of(files))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "medkit.hub.transfer"]
    assert line.startswith("fetched hf-hub:org/model: 2 files, 2.0 MB in ") and line.endswith(" MB/s)"), line
