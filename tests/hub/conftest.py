"""Hub test fixtures: one small finished run (built once), and a fake Hub on 127.0.0.1 that the
real ``huggingface_hub`` client reaches through ``HF_ENDPOINT``."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

#: A token-shaped secret that must never show up in logs, outputs or uploaded files.
TOKEN = "hf_medkitSecretToken0123456789abcdefXYZ"


def load_fake_hub() -> ModuleType:
    name = "medkit_tests_fake_hub"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fake_hub.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-stage ``sequential`` run over the synthetic 3D modalities (read-only)."""
    from medkit.testing.synthetic import run_synthetic

    base = tmp_path_factory.mktemp("hub-run")
    return run_synthetic(base / "run", "sequential", max_steps=2, demo_dir=base / "demo")


@pytest.fixture(scope="session")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-stage run over the text modality (``text_1d`` tokenizer with vocabulary assets)."""
    from medkit.testing.synthetic import run_synthetic

    base = tmp_path_factory.mktemp("hub-report")
    return run_synthetic(base / "run", "sequential", modalities=("report",), max_steps=2, demo_dir=base / "demo")


@pytest.fixture
def run_copy(synthetic_run: Path, tmp_path: Path) -> Path:
    """A private copy of the run that a test may edit."""
    return Path(shutil.copytree(synthetic_run, tmp_path / "run"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A running fake Hub; HF_ENDPOINT/HF_TOKEN/HF_HOME point at it and at an empty cache."""
    from huggingface_hub import constants

    fake = load_fake_hub()
    outside: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1"):
            outside.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"tests/hub: no network access to {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    with fake.FakeHub(TOKEN) as server:
        home = tmp_path / "hf-home"
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HOME", str(home))
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "120")  # a loaded CI machine is not a dead Hub
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
        # huggingface_hub reads these once at import (ENDPOINT also serves its agent-harness registry,
        # fetched once per process); the fake Hub speaks LFS, not Xet. Nothing may leave 127.0.0.1.
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",  # resolve URLs are rewritten from it
                            server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"), raising=False)
        yield server
    assert not outside, f"the hub tests tried to reach {sorted(set(outside))}"
