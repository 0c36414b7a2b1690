"""The one-way import rule (docs/architecture.md): ``cli → registry → runtime``; the runtime never
imports the registry or the CLI; plugins import only the public contract ``medkit.api`` (their tests also
``medkit.testing``), never each other. Every import counts, including those inside functions; ``from
medkit import x`` counts as ``medkit.x`` when ``x`` is a module."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The design card's folders and the import names they are mapped onto (pyproject's package-dir).
ROOTS = {"core": "medkit", "registry": "medkit.registry", "cli": "medkit.cli"}
SRC = REPO / "core"

#: What plugin code (``plugins/*/src``) may import from medkit: the public contract, nothing else.
PLUGIN_ALLOWED = ("medkit.api",)
#: What plugin tests (``plugins/*/tests``) may import from medkit: the contract and the testing namespace,
#: not their leaf modules (``medkit.api.errors``, ``medkit.testing.contracts``).
PLUGIN_TESTS_ALLOWED = ("medkit.api", "medkit.testing")
#: Plugin test files that are explicitly about another plugin, and the plugin they may import.
CROSS_PLUGIN_TESTS = {
    # developer tool: regenerates text_1d's shipped corpus from the report plugin's demo and cleaning
    "plugins/medkit-plugin-tokenizers/tests/make_text_corpus.py": "medkit_plugin_report",
}
#: Layers above the registry: they may import it (the CLI wires commands; the contract suites build
#: the plugin under test by name; the top-level convenience functions hand the host in).
ABOVE_REGISTRY = ("cli", "testing")


def module_name(path: Path, repo: Path = REPO) -> list[str]:
    """The dotted module name of ``path`` as parts (a plugin's ``src/`` or one of the card's roots)."""
    rel = path.resolve().relative_to(repo.resolve()).with_suffix("").parts
    if rel[0] in ROOTS:
        return [*ROOTS[rel[0]].split("."), *rel[1:]]
    if "src" not in rel:  # a plugin's tests: not a package, named by their path
        return list(rel)
    return list(rel[rel.index("src") + 1:])  # plugins/<dist>/src/<package>/...


def module_path(dotted: str, repo: Path = REPO) -> Path | None:
    """The file or package folder of a medkit or plugin module in the tree, ``None`` when there is none."""
    parts = dotted.split(".")
    if parts[0] == "medkit":
        root = {"registry": "registry", "cli": "cli"}.get(parts[1] if len(parts) > 1 else "")
        base = repo / root if root else repo / "core"
        rest = parts[2:] if root else parts[1:]
        candidates = [base.joinpath(*rest)]
    else:
        candidates = [d.joinpath(*parts[1:]) for d in repo.glob(f"plugins/*/src/{parts[0]}")]
    for c in candidates:
        if c.with_suffix(".py").is_file() or (c / "__init__.py").is_file():
            return c
    return None


@dataclass(frozen=True)
class Import:
    """One imported module: where, what (absolute dotted name), and whether only type checkers run it."""

    line: int
    name: str
    type_only: bool


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, repo: Path = REPO) -> list[Import]:
    """Every module ``path`` imports, at any depth (functions, classes, ``if TYPE_CHECKING:``), as absolute
    names with relative imports resolved; ``from pkg import sub`` names ``pkg.sub`` when ``sub`` is a
    module of the tree."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path, repo)
    package = here[:-1]  # a module's package; for ``pkg/__init__.py`` the package itself
    out: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, ast.Import):
            out.extend(Import(node.lineno, a.name, type_only) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[:len(package) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = alias.name != "*" and base.split(".")[0] in _TREE_ROOTS(repo) and \
                    module_path(sub, repo) is not None
                out.append(Import(node.lineno, sub if is_module else base, type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return list(dict.fromkeys(out))  # one entry per statement and module


def _TREE_ROOTS(repo: Path) -> set[str]:  # noqa: N802 - reads as a constant of the tree
    return {"medkit", *(d.name for d in repo.glob("plugins/*/src/*") if d.is_dir())}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def runtime_modules(repo: Path = REPO) -> list[tuple[Path, Path]]:
    """``(path, path relative to the medkit package)`` of every host module (core, registry, cli)."""
    out = []
    for folder, name in ROOTS.items():
        prefix = Path(*name.split(".")[1:])
        out += [(p, prefix / p.relative_to(repo / folder)) for p in (repo / folder).rglob("*.py")
                if "__pycache__" not in p.parts]
    return sorted(out)


def registry_violations(repo: Path = REPO) -> list[str]:
    """Runtime modules that import the registry or the CLI (the registry: the CLI)."""
    bad = []
    for path, rel in runtime_modules(repo):
        top = rel.parts[0] if len(rel.parts) > 1 else ""
        if top in ABOVE_REGISTRY or rel == Path("__init__.py"):
            continue
        forbidden = ("medkit.cli",) if top == "registry" else ("medkit.registry", "medkit.cli")
        bad += [f"{rel}:{i.line} imports {i.name}" for i in imports(path, repo)
                if any(_under(i.name, f) for f in forbidden)]
    return bad


def plugin_violations(repo: Path = REPO) -> list[str]:
    """Plugin modules (``plugins/*/src``) importing more of medkit than the contract, or another plugin."""
    packages = sorted(d for d in repo.glob("plugins/*/src/*") if d.is_dir())
    own = {d.name for d in packages}
    bad = []
    for pkg in packages:
        for path in sorted(pkg.rglob("*.py")):
            where = path.relative_to(repo)
            for i in imports(path, repo):
                root = i.name.split(".")[0]
                if root == "medkit" and i.name not in PLUGIN_ALLOWED:
                    bad.append(f"{where}:{i.line} imports {i.name}")
                elif root in own and root != pkg.name:
                    bad.append(f"{where}:{i.line} imports another plugin, {root}")
    return bad


def plugin_test_violations(repo: Path = REPO) -> list[str]:
    """Plugin test modules (``plugins/*/tests``) importing more of medkit than ``medkit.api`` and
    ``medkit.testing``, or another plugin where the test is not one of :data:`CROSS_PLUGIN_TESTS`."""
    own = {d.name for d in repo.glob("plugins/*/src/*") if d.is_dir()}
    bad = []
    for tests in sorted(repo.glob("plugins/*/tests")):
        mine = {d.name for d in tests.parent.glob("src/*") if d.is_dir()}
        for path in sorted(p for p in tests.rglob("*.py") if "__pycache__" not in p.parts):
            where = path.relative_to(repo).as_posix()
            for i in imports(path, repo):
                root = i.name.split(".")[0]
                if root == "medkit" and i.name not in PLUGIN_TESTS_ALLOWED:
                    bad.append(f"{where}:{i.line} imports {i.name}")
                elif root in own and root not in mine and CROSS_PLUGIN_TESTS.get(where) != root:
                    bad.append(f"{where}:{i.line} imports another plugin, {root}")
    return bad


def test_the_runtime_never_imports_the_registry_or_the_cli() -> None:
    bad = registry_violations()
    assert not bad, "the runtime must be handed the plugin host, not import it:\n" + "\n".join(bad)


def test_plugins_import_only_the_public_contract() -> None:
    assert len(list(REPO.glob("plugins/*/src/*"))) >= 15, "the scan found the plugins"
    bad = plugin_violations()
    assert not bad, ("plugins may import only " + ", ".join(PLUGIN_ALLOWED) + ":\n" + "\n".join(bad))


def test_plugin_tests_import_only_the_contract_and_the_testing_namespace() -> None:
    assert len(list(REPO.glob("plugins/*/tests/*.py"))) >= 15, "the scan found the plugins' tests"
    bad = plugin_test_violations()
    assert not bad, ("plugin tests may import only " + ", ".join(PLUGIN_TESTS_ALLOWED) + ":\n" + "\n".join(bad))


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_scan_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    """The rules would be toothless if imports hidden inside functions or classes were missed."""
    repo = _fake_tree(tmp_path, {
        "core/__init__.py": "",
        "core/engine/__init__.py": "",
        "core/engine/run.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from medkit.eval import report\n"
            "class Engine:\n    def run(self):\n        import medkit.registry.host\n"
            "def later():\n    def inner():\n        from medkit.config.compose import compose\n"),
        "core/eval/__init__.py": "", "core/eval/report.py": "",
        "core/config/__init__.py": "", "core/config/compose.py": "",
        "registry/__init__.py": "", "registry/host.py": "",
    })
    found = {(i.name, i.type_only) for i in imports(repo / "core/engine/run.py", repo)}
    assert ("medkit.registry.host", False) in found
    assert ("medkit.config.compose", False) in found
    assert ("medkit.eval.report", True) in found
    assert registry_violations(repo) == ["engine/run.py:6 imports medkit.registry.host"]


def test_from_package_import_module_names_the_module(tmp_path: Path) -> None:
    """``from medkit import registry`` imports ``medkit.registry`` (not ``medkit``); an attribute stays
    its package's."""
    repo = _fake_tree(tmp_path, {
        "core/__init__.py": "def load_pretrained(): ...\n",
        "core/hub/__init__.py": "",
        "core/hub/push.py": "from medkit import registry\nfrom medkit import load_pretrained\n"
                            "from medkit.api import errors, hookimpl\n",
        "core/api/__init__.py": "", "core/api/errors.py": "",
        "registry/__init__.py": "",
        "plugins/medkit-plugin-x/src/medkit_plugin_x/__init__.py": "from medkit import registry\n"
                                                                   "from medkit.api import hookimpl\n",
        "plugins/medkit-plugin-x/src/medkit_plugin_x/strategy.py": "from medkit.api.errors import DataError\n",
    })
    names = [i.name for i in imports(repo / "core/hub/push.py", repo)]
    assert names == ["medkit.registry", "medkit", "medkit.api.errors", "medkit.api"]
    assert registry_violations(repo) == ["hub/push.py:1 imports medkit.registry"]
    assert plugin_violations(repo) == [
        "plugins/medkit-plugin-x/src/medkit_plugin_x/__init__.py:1 imports medkit.registry",
        "plugins/medkit-plugin-x/src/medkit_plugin_x/strategy.py:1 imports medkit.api.errors"]


def test_the_plugin_test_scan_names_leaf_modules_the_registry_and_other_plugins(tmp_path: Path) -> None:
    """A plugin test may use ``medkit.api`` and ``medkit.testing``; their leaf modules, the registry and
    another plugin's package (outside :data:`CROSS_PLUGIN_TESTS`) are reported, inside functions too."""
    repo = _fake_tree(tmp_path, {
        "core/__init__.py": "", "core/api/__init__.py": "", "core/api/errors.py": "",
        "core/testing/__init__.py": "", "core/testing/contracts.py": "", "registry/__init__.py": "",
        "plugins/medkit-plugin-x/src/medkit_plugin_x/__init__.py": "",
        "plugins/medkit-plugin-y/src/medkit_plugin_y/__init__.py": "",
        "plugins/medkit-plugin-x/tests/test_x.py": (
            "from medkit.api import ConfigError\nfrom medkit.testing import create\n"
            "import medkit_plugin_x\nfrom medkit.api.errors import DataError\n"
            "def test():\n    from medkit.testing import contracts\n    from medkit.registry import get_host\n"
            "    import medkit_plugin_y\n"),
    })
    assert plugin_test_violations(repo) == [
        "plugins/medkit-plugin-x/tests/test_x.py:4 imports medkit.api.errors",
        "plugins/medkit-plugin-x/tests/test_x.py:6 imports medkit.testing.contracts",
        "plugins/medkit-plugin-x/tests/test_x.py:7 imports medkit.registry",
        "plugins/medkit-plugin-x/tests/test_x.py:8 imports another plugin, medkit_plugin_y"]
