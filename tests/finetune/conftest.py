"""Fixtures of the fine-tuning tests: a tiny pre-trained run made once per session by the real
engine, one torch thread (the CI machine is shared), and an in-process ``medkit`` runner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-stage pre-training run (synthetic 3D then 2D data, depth 2, width 48)."""
    import torch

    from medkit.testing.synthetic import run_synthetic
    from medkit.registry import reset_host

    import medkit.config.compose as config

    root = tmp_path_factory.mktemp("pretrained")
    saved = os.environ.get("MEDKIT_DEMO_DIR")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = run_synthetic(root / "run", "sequential", modalities=("synth_a", "synth_2d"), max_steps=2,
                            demo_dir=root / "demo")
    finally:
        torch.set_num_threads(threads)
        if saved is None:
            os.environ.pop("MEDKIT_DEMO_DIR", None)
        else:
            os.environ["MEDKIT_DEMO_DIR"] = saved
        reset_host()
        config._STORE = None
    return run


@pytest.fixture
def medkit() -> Any:
    """``medkit(*args)`` runs the command line in this process and returns click's Result."""
    from click.testing import CliRunner

    from medkit.cli.main import cli

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def external() -> Any:
    """``external_fixtures.py`` (released-checkpoint stand-ins of the comparison backbones) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("medkit_tests_external_fixtures",
                                                  Path(__file__).parent / "external_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def releases(external: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One released-layout ``.pth`` per comparison backbone, written once per session."""
    root = tmp_path_factory.mktemp("releases")
    return {name: (external.write_release(name, root / f"{name}.pth"), root / f"{name}.pth")[1]
            for name in external.released_keys()}
