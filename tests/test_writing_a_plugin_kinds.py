"""docs/writing-a-plugin.md has one working plugin of each kind: every example, extracted from the page and
installed through an entry point, is small, imports only ``medkit.api`` and passes the page's own tests
(the ``# tests/...`` blocks, collected here: each kind's contract suite, the observer on a real run) and,
for the backbone, what the page says it does on the real host."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path
from typing import Iterator

import pytest

from medkit.testing.contracts import StrategyContract

#: package → entry point value, as each example's ``pyproject.toml`` declares it
ENTRY_POINTS = {"medkit_plugin_shapes": "medkit_plugin_shapes", "medkit_plugin_rows": "medkit_plugin_rows",
                "medkit_plugin_meancolour": "medkit_plugin_meancolour",
                "medkit_plugin_together": "medkit_plugin_together",
                "medkit_plugin_brightness": "medkit_plugin_brightness",
                "medkit_plugin_tinycnn": "medkit_plugin_tinycnn",
                "medkit_plugin_losses": "medkit_plugin_losses:OBSERVER"}

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"


def _blocks(prefix: str) -> list[tuple[str, str]]:
    """``(path, code)`` of every python block whose first line is a ``# <prefix>...`` path comment."""
    out = []
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S):
        first, _, body = block.partition("\n")
        if first.startswith(f"# {prefix}"):
            out.append((first[2:].strip(), body))
    return out


def _files() -> dict[str, str]:
    """``{path: code}`` of the plugins' files (``# src/...`` blocks)."""
    return dict(_blocks("src/"))


def _collect_page_tests() -> list[str]:
    """Define the page's ``# tests/...`` blocks in this module, so pytest collects their tests here."""
    names = []
    for rel, code in _blocks("tests/"):
        scope: dict[str, object] = {"__name__": __name__}
        exec(compile(code, f"{DOC}:{rel}", "exec"), scope)  # the page's own code, as a plugin's tests run it
        for name, value in scope.items():
            if name.startswith(("Test", "test_")) and callable(value):
                assert name not in globals(), f"{DOC.name}: two test blocks define {name}"
                if isinstance(value, type) and issubclass(value, StrategyContract):  # two engine runs: ~5 s
                    value = pytest.mark.slow(value)
                globals()[name] = value
                names.append(name)
    return names


PAGE_TESTS = _collect_page_tests()


def _packages() -> dict[str, dict[str, str]]:
    """``{package: {path: code}}`` of the page's ``# src/<package>/...`` blocks."""
    out: dict[str, dict[str, str]] = {}
    for rel, code in _files().items():
        out.setdefault(rel.split("/")[1], {})[rel] = code
    return out


def test_one_small_example_per_kind_importing_only_the_public_api() -> None:
    packages = _packages()
    assert set(packages) == set(ENTRY_POINTS)
    for package, files in packages.items():
        if package != "medkit_plugin_shapes":  # the modality example: two files, < 150 lines
            assert sum(len(code.splitlines()) for code in files.values()) < 80, package
        for rel, code in files.items():
            for node in ast.walk(ast.parse(code)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                bad = [n for n in names if n.split(".")[0] == "medkit" and n != "medkit.api"]
                assert not bad, f"{rel} imports {bad}"


@pytest.fixture(scope="module", autouse=True)
def _installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The page's plugins on ``sys.path`` with their entry points in a ``*.dist-info`` folder there,
    as ``pip install`` would leave them; every host built meanwhile (``run_synthetic``'s too) sees them."""
    root = tmp_path_factory.mktemp("doc_plugins")
    for rel, code in _files().items():
        path = root / rel.removeprefix("src/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code, encoding="utf-8")
    info = root / "medkit_doc_examples-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: medkit-doc-examples\nVersion: 1.0\n")
    lines = [f"{p.removeprefix('medkit_plugin_')} = {v}" for p, v in ENTRY_POINTS.items()]
    (info / "entry_points.txt").write_text("[medkit]\n" + "\n".join(lines) + "\n")
    stale = {n: m for n, m in sys.modules.items() if n.split(".")[0] in ENTRY_POINTS}
    for name in stale:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [n for n in sys.modules if n.split(".")[0] in ENTRY_POINTS]:
        del sys.modules[name]
    sys.modules.update(stale)


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A process-wide host with the installed plugins and the page's (from the entry points above)."""
    import medkit.config.compose as config
    from medkit.registry import reset_host
    from medkit.registry.host import PluginHost

    monkeypatch.delenv("MEDKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MEDKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(tmp_path_factory.getbasetemp() / "demo"))
    host = PluginHost(list(md.entry_points(group="medkit")))
    reset_host(host)
    config._STORE = None
    yield host
    reset_host()
    config._STORE = None


def test_every_example_loads_and_registers_what_the_page_says(host) -> None:
    mine = {r.entry_point: r for r in host.records if r.dist == "medkit-doc-examples"}
    assert sorted(mine) == sorted(p.removeprefix("medkit_plugin_") for p in ENTRY_POINTS)
    assert all(r.error is None for r in mine.values()), {n: r.error for n, r in mine.items() if r.error}
    assert {k: sorted(v) for r in mine.values() for k, v in r.provides.items()} == {
        "modality": ["shapes"], "tokenizer": ["rows_2d"], "objective": ["mean_colour"],
        "strategy": ["together"], "task": ["brightness"], "backbone": ["tiny-cnn"]}
    import medkit_plugin_losses

    assert host.pm.get_plugin("medkit-doc-examples:losses") is medkit_plugin_losses.OBSERVER


def test_the_page_tests_every_kind() -> None:
    assert sorted(PAGE_TESTS) == ["TestBrightness", "TestMeanColour", "TestRows", "TestTogether",
                                  "test_it_sees_every_logged_step"]


def test_the_backbone_is_found_builds_and_loads_a_release(host, tmp_path: Path) -> None:
    import torch

    from medkit.api import CheckpointError, ConfigError, ExternalBackbone, Family, load_into

    family = host.spec("backbone", "tiny-cnn").load_factory()
    assert isinstance(family, Family) and "tiny-cnn" in host.names("backbone")
    model = host.create("backbone", "tiny-cnn", dims=2)
    assert isinstance(model, ExternalBackbone) and model.family == "tiny-cnn"
    x = model.collate([{"id": str(i), "input": torch.rand(3, 64, 64)} for i in range(2)], "xray")["inputs"]
    assert model.pooled(x).shape == (2, 128)
    assert [tuple(m.shape) for m in model.feature_maps(x, [0, 3])] == [(2, 16, 32, 32), (2, 128, 4, 4)]
    with pytest.raises(ConfigError, match="tiny-cnn is a 2D model"):
        host.create("backbone", "tiny-cnn", dims=3)
    release = tmp_path / "tiny_cnn.pth"  # as the authors would save it: a classifier on top, under state_dict
    state = {f"net.{k}": v for k, v in model.net.state_dict().items()} | {"fc.weight": torch.zeros(2, 128)}
    torch.save({"state_dict": state}, release)
    fresh = family(2)
    report = load_into(fresh, family, release)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert report.dropped == {"fc.weight": "classifier of pre-training"}
    torch.save({"state_dict": {"net.0.0.weight": state["net.0.0.weight"]}}, release)
    with pytest.raises(CheckpointError, match="missing TinyCNN tensor"):
        load_into(family(2), family, release)

