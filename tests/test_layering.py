"""The runtime's packages form a graph without cycles, with the public ``medkit.api`` namespace on top.

A package is the first component after ``medkit.`` (``medkit.engine.step`` belongs to ``engine``). Every
import counts — at module level, inside functions and classes — except those under ``if TYPE_CHECKING:``:
type checkers never execute them, so they cannot make an import cycle or an initialisation order, and
with ``from __future__ import annotations`` they are how a bottom module names an upper type in an
annotation (the run context's ``encoder: UniversalEncoder``). The public namespace ``medkit.api`` (its
``__init__``, which re-exports the contract from the runtime's own modules) is its own node, ``api:public``,
above everything it re-exports; the api's leaf modules (``medkit.api.errors``, ``medkit.api.specs``…)
are the node ``api``, which the rest of the runtime builds on.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections import defaultdict
from pathlib import Path

# the scanner of test_import_rules.py (tests are not a package: pytest runs with --import-mode=importlib)
_spec = importlib.util.spec_from_file_location("_medkit_import_rules", Path(__file__).with_name("test_import_rules.py"))
assert _spec is not None and _spec.loader is not None
_rules = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(_rules)
REPO, Import, _fake_tree, imports, runtime_modules = (
    _rules.REPO, _rules.Import, _rules._fake_tree, _rules.imports, _rules.runtime_modules)

PUBLIC = "api:public"


def _node(dotted: str) -> str | None:
    """The graph node of a medkit module name (``None`` for the root package ``medkit`` itself)."""
    parts = dotted.split(".")
    if parts[0] != "medkit" or len(parts) < 2:
        return None
    return PUBLIC if parts[1:] == ["api"] else parts[1]


def _lazy_exports(path: Path) -> dict[str, str]:
    """The ``_EXPORTS`` table (name → module) of the public namespace, read without importing it."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and node.value is not None:
            return ast.literal_eval(node.value)
    return {}


def package_graph(repo: Path = REPO) -> dict[str, dict[str, list[str]]]:
    """``{package: {imported package: ["file:line", ...]}}`` over the runtime (core, registry, cli);
    the public namespace's lazy re-exports count as its imports."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, rel in runtime_modules(repo):
        if rel == Path("__init__.py"):
            continue  # the root package ``medkit``: convenience functions above every layer
        src = PUBLIC if rel == Path("api/__init__.py") else rel.parts[0]
        found = imports(path, repo)
        if src == PUBLIC:
            found += [Import(0, module, False) for module in _lazy_exports(path).values()]
        for i in found:
            dst = _node(i.name)
            if dst is not None and dst != src and not i.type_only:
                graph[src][dst].append(f"{path.relative_to(repo)}:{i.line}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]`` (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def describe(graph: dict[str, dict[str, list[str]]], cycle: list[str]) -> str:
    return "\n".join(f"  {a} -> {b}: {', '.join(graph[a][b][:3])}" for a, b in zip(cycle, cycle[1:]))


def test_the_runtime_packages_have_no_cycle() -> None:
    graph = package_graph()
    nodes = set(graph) | {dst for where in graph.values() for dst in where}
    assert {"api", "engine", "models", "config", "eval", PUBLIC} <= nodes, "the scan found the runtime"
    cycle = find_cycle(graph)
    assert not cycle, "import cycle between the runtime's packages " + " -> ".join(cycle) + ":\n" + \
        describe(graph, cycle)


def test_the_contract_types_are_the_bottom_and_the_public_namespace_the_top() -> None:
    graph = package_graph()
    bad = {dst: where for dst, where in graph.get("api", {}).items()}
    assert not bad, f"the api's leaf modules (errors, specs, protocols, batch…) are the bottom: {bad}"
    users = {src: where[PUBLIC] for src, where in graph.items() if PUBLIC in where and src != "cli"}
    assert not users, ("the runtime imports the api's leaf modules (medkit.api.errors…), never the public "
                       f"namespace medkit.api that re-exports it: {users}")
    assert {"data", "models", "strategies", "storage", "api"} <= set(graph[PUBLIC]), \
        "the public namespace re-exports the runtime's helpers"


def test_a_cycle_is_found_and_listed(tmp_path: Path) -> None:
    """The check has teeth: two packages importing each other (one of them inside a function) fail."""
    repo = _fake_tree(tmp_path, {
        "core/__init__.py": "",
        "core/api/__init__.py": "_EXPORTS = {'Encoder': 'medkit.models.encoder'}\n",
        "core/api/context.py": "from medkit.models.encoder import Encoder\n",
        "core/models/__init__.py": "",
        "core/models/encoder.py": "def f():\n    from medkit.api import errors\n",
        "core/api/errors.py": "", "registry/__init__.py": "", "cli/__init__.py": "",
    })
    graph = package_graph(repo)
    assert find_cycle(graph) == ["api", "models", "api"]
    assert "core/models/encoder.py:2" in describe(graph, find_cycle(graph))
    assert graph[PUBLIC] == {"models": ["core/api/__init__.py:0"]}
