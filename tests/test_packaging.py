"""The wheel holds every subpackage (an editable install hides an omission; the wheel does not)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the design card's folders and the import names setuptools maps them onto
ROOTS = {"core": "medkit", "registry": "medkit.registry", "cli": "medkit.cli"}


@pytest.mark.slow
def test_wheel_contains_every_module(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in ROOTS:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("medkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"/".join((*name.split("."), *p.relative_to(REPO / folder).parts))
                for folder, name in ROOTS.items() for p in (REPO / folder).rglob("*.py")
                if "__pycache__" not in p.parts}
    missing = sorted(expected - names)
    assert not missing, f"modules missing from the wheel (a folder without __init__.py?): {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "medkit = medkit.cli.main:main" in text and "builtin = medkit.strategies.builtin" in text
