"""Every folder of the runtime under ``src/medkit`` is a package (setuptools' find skips a folder
without ``__init__.py``, and an editable install hides the omission)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_runtime_folder_is_a_package() -> None:
    src = ROOT / "src" / "medkit"
    folders = {p.parent for p in src.rglob("*.py") if "__pycache__" not in p.parts}
    assert src in folders
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"folders without __init__.py (setuptools would leave them out): {missing}"
