"""Safe loading everywhere: no pickle, ``torch.load`` only with ``weights_only=True``, no
``np.load(..., allow_pickle=True)`` in any source file outside the tests."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "pickletools", "shelve"}
PICKLE_EXCEPTIONS = {"UnpicklingError", "PicklingError", "PickleError"}
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", "node_modules", ".eggs", "tests"}


def source_files(root: Path = REPO) -> list[Path]:
    """Every ``.py`` file git would track (committed or not ignored), outside any ``tests/`` folder."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
                             cwd=root, capture_output=True, text=True, check=True, timeout=60).stdout
        files = [root / line for line in out.splitlines() if line]
    except (OSError, subprocess.SubprocessError):
        files = [p for p in root.rglob("*.py")
                 if not any(part in SKIP_DIRS or part.endswith(".egg-info") for part in p.relative_to(root).parts)]
    return sorted(p for p in files if p.is_file() and "tests" not in p.relative_to(root).parts)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str, filename: str = "<string>") -> list[str]:
    """Offences in one file: ``line: what``. Aliases (``import torch as T``, ``from numpy import
    load``) are followed; a ``**kwargs`` call cannot prove ``weights_only=True`` and is refused.
    Importing a pickle module only to name its exception classes (``except pickle.UnpicklingError``,
    e.g. around ``torch.load(weights_only=True)``) is allowed: nothing is unpickled by it."""
    tree = ast.parse(source, filename)
    alias: dict[str, str] = {}  # local name → dotted origin
    found: list[str] = []
    pickle_names: dict[str, int] = {}  # local name bound to a pickle module → line of its import
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                local = a.asname or a.name.split(".")[0]
                alias[local] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in PICKLE_MODULES:
                    pickle_names[local] = node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
                if node.module.split(".")[0] in PICKLE_MODULES and a.name not in PICKLE_EXCEPTIONS:
                    found.append(f"{node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):  # a pickle module used for anything but its exception classes
        if isinstance(node, ast.Name) and node.id in pickle_names:
            parent_ok = any(isinstance(p, ast.Attribute) and p.value is node and p.attr in PICKLE_EXCEPTIONS
                            for p in ast.walk(tree))
            if not parent_ok:
                found.append(f"{pickle_names[node.id]}: import {alias[node.id]} (used at line {node.lineno})")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if not name:
            continue
        head, _, rest = name.partition(".")
        full = alias.get(head, head) + (f".{rest}" if rest else "")
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        opaque = any(k.arg is None for k in node.keywords)
        if full in ("torch.load", "torch.serialization.load") and (opaque or not _is_true(kwargs.get("weights_only"))):
            found.append(f"{node.lineno}: torch.load without weights_only=True")
        elif full in ("numpy.load", "np.load") and (opaque or _is_true(kwargs.get("allow_pickle"))):
            found.append(f"{node.lineno}: numpy.load with allow_pickle=True")
        elif full.endswith(("read_pickle", ".Unpickler")) or full.split(".")[0] in PICKLE_MODULES:
            found.append(f"{node.lineno}: {full}(...)")
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def test_the_scanner_catches_every_unsafe_form() -> None:
    bad = """
import pickle
import torch as T
from numpy import load as npl
import numpy as np
from joblib import load
T.load("a.pt")
T.load("a.pt", weights_only=False)
torch.load("a.pt", **opts)
np.load("x.npy", allow_pickle=True)
npl("x.npy", allow_pickle=True)
pickle.loads(b"")
pd.read_pickle("x")
"""
    found = unsafe_loads(bad)
    assert [f.split(":")[0] for f in found] == ["2", "6", "7", "8", "9", "10", "11", "12", "13"], found
    assert unsafe_loads("import pickle as p\nf = p.loads\n") == ["1: import pickle (used at line 2)"]
    good = """
import pickle
import torch, numpy as np
from pickle import UnpicklingError
try:
    torch.load("a.pt", weights_only=True, map_location="cpu")
except (pickle.UnpicklingError, UnpicklingError):
    pass
np.load("x.npy")
np.load("x.npy", allow_pickle=False)
"""
    assert unsafe_loads(good) == []


def test_no_unsafe_deserialisation_in_the_source_tree() -> None:
    files = source_files()
    assert any(p.name == "files.py" and p.parent.name == "storage" for p in files), "the scan found the sources"
    offenders = [f"{p.relative_to(REPO)}:{hit}" for p in files for hit in unsafe_loads(p.read_text("utf-8"), str(p))]
    assert not offenders, "unsafe deserialisation (use safetensors/JSON, torch.load(weights_only=True)):\n" + \
        "\n".join(offenders)
