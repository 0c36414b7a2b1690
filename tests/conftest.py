"""Host test fixtures. Tests never depend on the user's environment variables for plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_host(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Each test starts with a fresh plugin host and no plugin selection from the environment."""
    from medkit.registry import reset_host

    monkeypatch.delenv("MEDKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MEDKIT_DISABLE_PLUGINS", raising=False)
    if "MEDKIT_DEMO_DIR" not in os.environ:
        monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path_factory.getbasetemp() / "demo"))
    reset_host()
    import medkit.config.compose as config

    config._STORE = None
    yield
    reset_host()
    config._STORE = None


def make_dist(root: Path, dist: str, module: str, source: str, *, ep_name: str | None = None) -> None:
    """Write an installed-looking distribution (dist-info + module) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[medkit]\n{ep_name or module} = {module}\n")


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``medkit`` in a subprocess (the installed console script's module)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "medkit.cli.main", *args], capture_output=True,
                          text=True, env=full_env, cwd=str(cwd) if cwd else None, timeout=timeout)


def run_cli_in_process(*args: str, env: dict[str, str] | None = None,
                       cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``medkit ARGS`` in this process through click's ``CliRunner`` (the CLI's code path without a new
    process importing torch and loading every plugin), on a fresh plugin host and config store; the
    logging the CLI sets up is taken down after (its handler writes to the runner's stream)."""
    import logging
    import warnings

    from click.testing import CliRunner

    import medkit.config.compose as config
    from medkit.cli.main import cli
    from medkit.registry import reset_host

    root = logging.getLogger()
    handlers, level, formatwarning = list(root.handlers), root.level, warnings.formatwarning
    before = os.getcwd()
    reset_host()
    config._STORE = None
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(cli, list(args), env=env, prog_name="medkit")
    finally:
        os.chdir(before)
        root.handlers[:] = handlers
        root.setLevel(level)
        warnings.formatwarning = formatwarning
        logging.captureWarnings(False)
        reset_host()
        config._STORE = None
    return subprocess.CompletedProcess(["medkit", *args], result.exit_code, result.stdout, result.stderr)


def finishes(fn: Any, timeout: float, blocked: str) -> BaseException | None:
    """Run ``fn`` in a daemon thread and return what it raised (``None`` if nothing); fail the test
    with ``blocked`` if it is still running after ``timeout`` s (it hangs on a FIFO, say)."""
    import threading

    box: dict[str, BaseException | None] = {"exc": None}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), blocked
    return box["exc"]
