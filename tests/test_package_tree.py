"""The repository's top level is the one the design card fixes, and every runtime folder is a package
that ``pyproject.toml`` lists (an editable install hides an omission; the wheel does not)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The design card: core/ (the runtime), plugins/, registry/, cli/, tests/, pyproject.toml. Beside them
# only documentation, benchmarks and the usual project files.
CARD = {"core", "plugins", "registry", "cli", "tests", "pyproject.toml"}
ALSO_ALLOWED = {"README.md", "docs", "bench", "conftest.py", "requirements-dev.txt", ".ci", ".gitignore"}
# import name of each mapped folder
ROOTS = {"core": "medkit", "registry": "medkit.registry", "cli": "medkit.cli"}


def _tracked_top_level() -> set[str]:
    import subprocess

    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # not a git checkout (an sdist): read the folder instead
        return {p.name for p in ROOT.iterdir() if not p.name.startswith(".") or p.name in ALSO_ALLOWED}
    return {line.split("/", 1)[0] for line in out.stdout.splitlines() if line}


def test_top_level_is_the_cards() -> None:
    top = _tracked_top_level()
    assert CARD <= top, f"missing from the top level: {sorted(CARD - top)}"
    assert top <= CARD | ALSO_ALLOWED, f"not on the design card: {sorted(top - CARD - ALSO_ALLOWED)}"


def test_package_dir_maps_the_card_onto_medkit() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == {name: folder for folder, name in ROOTS.items()}


def _packages_on_disk() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, name in ROOTS.items():
        base = ROOT / folder
        for py in base.rglob("*.py"):
            if "__pycache__" in py.parts:
                continue
            rel = py.parent.relative_to(base).parts
            found[".".join((name, *rel))] = py.parent
    return found


def test_every_runtime_folder_is_a_package() -> None:
    found = _packages_on_disk()
    missing = sorted(str(f.relative_to(ROOT)) for f in found.values() if not (f / "__init__.py").exists())
    assert not missing, f"folders without __init__.py (setuptools would leave them out): {missing}"


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(_packages_on_disk())
    assert found == listed, (
        f"pyproject.toml [tool.setuptools] packages: missing {sorted(found - listed)}, "
        f"stale {sorted(listed - found)}"
    )
