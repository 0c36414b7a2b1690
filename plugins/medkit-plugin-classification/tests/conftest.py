"""Classification plugin test fixtures: one torch thread (the CI machine is shared), fresh host."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread_fresh_host(monkeypatch: pytest.MonkeyPatch):
    import torch

    from medkit.testing import reset_host

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.delenv("MEDKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MEDKIT_DISABLE_PLUGINS", raising=False)
    reset_host()
    yield
    torch.set_num_threads(threads)
    reset_host()
