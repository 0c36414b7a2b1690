"""A fresh plugin host per test (tests never see the user's plugin selection)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_host(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    from medkit.testing import reset_host

    monkeypatch.delenv("MEDKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MEDKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path_factory.getbasetemp() / "demo"))
    reset_host()
    yield
    reset_host()
