"""Every host subpackage is listed in pyproject's ``packages`` (editable installs hide omissions)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[3]


def test_every_subpackage_is_listed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(cfg["packages"])
    assert "medkit.core.io" in listed
    for name, folder in cfg["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" in rel or any(p.startswith(".") for p in rel):
                continue
            package = ".".join((name, *rel))
            assert package in listed, f"{package} ({init.parent}) is missing from [tool.setuptools] packages"
