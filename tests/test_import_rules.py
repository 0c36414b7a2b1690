"""The one-way import rule (docs/architecture.md): ``cli → registry → runtime``; the runtime never
imports the registry or the CLI; plugins import only the public API and the documented helpers,
never each other. Every import counts, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The design card's folders and the import names they are mapped onto (pyproject's package-dir).
ROOTS = {"core": "medkit", "registry": "medkit.registry", "cli": "medkit.cli"}
SRC = REPO / "core"


def module_name(path: Path) -> list[str]:
    """The dotted module name of ``path`` as parts (a plugin's ``src/`` or one of the card's roots)."""
    rel = path.resolve().relative_to(REPO).with_suffix("").parts
    if rel[0] in ROOTS:
        return [*ROOTS[rel[0]].split("."), *rel[1:]]
    return list(rel[rel.index("src") + 1:])  # plugins/<dist>/src/<package>/...


#: What plugin code may import from medkit: the API and the documented helpers.
PLUGIN_ALLOWED = ("medkit.api", "medkit.data", "medkit.models", "medkit.strategies", "medkit.storage",
                  "medkit.testing")
#: Layers above the registry: they may import it (the CLI wires commands; the contract suites build
#: the plugin under test by name; the top-level convenience functions hand the host in).
ABOVE_REGISTRY = ("cli", "testing")


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names; relative imports resolved), with line numbers."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                module = module_name(path)
                package = ".".join(module[:-node.level])
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            out.append((node.lineno, base))
    return out


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


#: Imports of the registry still to be replaced by a handed-in host (the decoupling in progress).
#: Must end empty: the test fails on any violation not listed here.
KNOWN_VIOLATIONS: set[str] = set()
KNOWN_PLUGIN_VIOLATIONS: set[str] = set()


def runtime_modules() -> list[tuple[Path, Path]]:
    """``(path, path relative to the medkit package)`` of every host module (core, registry, cli)."""
    out = []
    for folder, name in ROOTS.items():
        prefix = Path(*name.split(".")[1:])
        out += [(p, prefix / p.relative_to(REPO / folder)) for p in (REPO / folder).rglob("*.py")
                if "__pycache__" not in p.parts]
    return sorted(out)


def test_the_runtime_never_imports_the_registry_or_the_cli() -> None:
    bad = []
    for path, rel in runtime_modules():
        top = rel.parts[0] if len(rel.parts) > 1 else ""
        if top in ABOVE_REGISTRY or rel == Path("__init__.py") or rel.as_posix() in KNOWN_VIOLATIONS:
            continue
        forbidden = ("medkit.cli",) if top == "registry" else ("medkit.registry", "medkit.cli")
        bad += [f"{rel}:{line} imports {name}" for line, name in imports(path)
                if any(_under(name, f) for f in forbidden)]
    assert not bad, "the runtime must be handed the plugin host, not import it:\n" + "\n".join(bad)


def test_plugins_import_only_the_api_and_documented_helpers() -> None:
    dists = sorted((REPO / "plugins").glob("*/src/*"))
    assert len(dists) >= 15, "the scan found the plugins"
    own_names = {d.name for d in dists}
    bad = []
    for pkg in dists:
        for path in sorted(pkg.rglob("*.py")):
            if f"{pkg.name}/{path.relative_to(pkg).as_posix()}" in KNOWN_PLUGIN_VIOLATIONS:
                continue
            for line, name in imports(path):
                where = f"{path.relative_to(REPO)}:{line}"
                root = name.split(".")[0]
                if root == "medkit" and name != "medkit" and not any(_under(name, a) for a in PLUGIN_ALLOWED):
                    bad.append(f"{where} imports {name}")
                elif root in own_names and root != pkg.name:
                    bad.append(f"{where} imports another plugin, {root}")
    assert not bad, ("plugins may import only " + ", ".join(PLUGIN_ALLOWED) + ":\n" + "\n".join(bad))


def test_the_scan_sees_function_level_imports(tmp_path: Path) -> None:
    """The rule would be toothless if imports hidden inside functions were missed."""
    probe = SRC / "engine" / "engine.py"
    found = {name for _, name in imports(probe)}
    assert "medkit.config.compose" in found  # imported inside Engine.run
