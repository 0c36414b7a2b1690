"""The namespace plugin tests import beside the contract: ``medkit.testing.__all__``, lazily loaded."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import medkit.api as api
import medkit.testing as testing

INIT = Path(testing.__file__)


def _type_checking_names() -> set[str]:
    """The names the ``if TYPE_CHECKING:`` block of ``medkit/testing/__init__.py`` binds."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    return {a.asname or a.name for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names}


def test_all_is_the_export_table_and_every_name_is_the_runtime_object() -> None:
    assert testing.__all__ == sorted(testing._EXPORTS), "__all__ lists exactly the re-exported names, sorted"
    assert _type_checking_names() == set(testing.__all__), "type checkers see the same names"
    for name, target in testing._EXPORTS.items():
        module, _, attr = target.partition(":")
        assert getattr(testing, name) is getattr(importlib.import_module(module), attr or name), name


def test_it_adds_to_the_contract_without_shadowing_it() -> None:
    """A name is in one namespace: a test never wonders which ``ConfigError`` it holds."""
    assert not set(testing.__all__) & set(api.__all__)
    assert {"create", "get_host", "reset_host", "Engine", "load_config", "StrategyContract",
            "run_synthetic"} <= set(testing.__all__)


def test_an_unknown_name_points_at_both_namespaces() -> None:
    with pytest.raises(AttributeError, match=r"medkit.api.__all__ and medkit.testing.__all__"):
        testing.get_hostt  # noqa: B018 - the attribute access is the test


def test_importing_the_namespace_stays_light() -> None:
    code = ("import sys\nimport medkit.testing\nfrom medkit.testing import reset_host\n"
            "print(sorted(m for m in ('torch', 'numpy', 'medkit.engine', 'medkit.testing.contracts') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
