"""The lint and type gate: ruff and mypy, configured in ``pyproject.toml``, report nothing on the runtime
(``core/``, ``registry/``, ``cli/``) and every plugin's ``src/`` (the README's test command runs them);
ruff also checks the benchmark scripts (``bench/``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SRCS = sorted(ROOT.glob("plugins/*/src"))
CHECKED = ["core", "registry", "cli", *(str(p.relative_to(ROOT)) for p in PLUGIN_SRCS)]


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, env=env)


def test_ruff_reports_nothing() -> None:
    out = _run(["ruff", "check", "--no-cache", "--output-format", "concise", *CHECKED, "bench"])
    assert out.returncode == 0, f"ruff check found problems (fix them, or a noqa naming its rule and why):\n" \
                                f"{out.stdout}{out.stderr}"


def _import_tree(base: Path) -> Path:
    """``base/medkit``: the package-dir mapping of pyproject.toml (core/ is ``medkit``, registry/ and cli/
    are ``medkit.registry`` and ``medkit.cli``) as symlinks, so mypy sees the import names of the wheel."""
    pkg = base / "medkit"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    mapped = {"registry": ROOT / "registry", "cli": ROOT / "cli"}
    for child in (ROOT / "core").iterdir():
        if child.name not in mapped and child.name != "__pycache__":
            (pkg / child.name).symlink_to(child)
    for name, folder in mapped.items():
        (pkg / name).symlink_to(folder)
    return base


@pytest.mark.slow
def test_mypy_reports_nothing() -> None:
    # a stable place per checkout, so mypy's cache makes a second run fast
    base = Path(tempfile.gettempdir()) / f"medkit-mypy-{hashlib.sha1(str(ROOT).encode()).hexdigest()[:12]}"
    tree = _import_tree(base)
    env = dict(os.environ, MYPYPATH=os.pathsep.join([str(tree), *map(str, PLUGIN_SRCS)]))
    packages = [arg for src in PLUGIN_SRCS for pkg in sorted(src.iterdir())
                if (pkg / "__init__.py").is_file() for arg in ("-p", pkg.name)]
    out = _run(["mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(base / "cache"),
                "--no-error-summary", "-p", "medkit", *packages], env=env)
    report = (out.stdout + out.stderr).replace(str(tree / "medkit") + "/", "medkit/")
    assert out.returncode == 0, f"mypy found type errors:\n{report}"
