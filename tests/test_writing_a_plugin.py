"""docs/writing-a-plugin.md stays true: its example modality, extracted from the page, registers
through an entry point, passes the ModalityContract, and is under 150 lines."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

from medkit.testing.contracts import ModalityContract

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"
PACKAGE = "medkit_plugin_shapes"


def _files() -> dict[str, str]:
    """``{path: code}`` of every python block that starts with a ``# src/...`` path comment."""
    out = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S):
        first, _, body = block.partition("\n")
        if first.startswith("# src/"):
            out[first[2:].strip()] = body
    return out


def test_the_example_is_small_and_imports_only_public_medkit() -> None:
    files = _files()
    assert set(files) == {f"src/{PACKAGE}/__init__.py", f"src/{PACKAGE}/modality.py",
                          *(f"src/medkit_plugin_{kind}/__init__.py"  # one example per other kind
                            for kind in ("rows", "meancolour", "together", "brightness", "tinycnn", "losses"))}
    files = {rel: code for rel, code in files.items() if rel.startswith(f"src/{PACKAGE}/")}
    assert sum(len(code.splitlines()) for code in files.values()) < 150
    imported = set(re.findall(r"^\s*(?:from|import) (medkit[\w.]*)", "\n".join(files.values()), flags=re.M))
    allowed = ("medkit.api", "medkit.data", "medkit.models", "medkit.strategies", "medkit.storage",
               "medkit.testing")
    assert imported and all(m.startswith(allowed) for m in imported), imported
    assert not any("._" in m or m.split(".")[-1].startswith("_") for m in imported)


@pytest.fixture(autouse=True)
def _shapes_host(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A plugin host with the installed plugins plus the doc's ``shapes`` plugin (entry point)."""
    from medkit.registry import reset_host
    from medkit.registry.host import PluginHost

    root = tmp_path_factory.mktemp("shapes_plugin")
    for rel, code in _files().items():
        path = root / rel.removeprefix("src/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
        monkeypatch.delitem(sys.modules, name)
    eps = list(md.entry_points(group="medkit"))
    eps.append(md.EntryPoint(name="shapes", value=PACKAGE, group="medkit"))
    host = PluginHost(eps)
    reset_host(host)
    yield host
    reset_host()


class TestDocExample(ModalityContract):
    name = "shapes"

    def test_it_is_registered_with_its_metadata(self, _shapes_host) -> None:
        spec = _shapes_host.spec("modality", "shapes")
        assert spec.meta["dims"] == 2 and self.make_modality().dims == 2

    def test_sources_group_patients_and_labels_come_from_folders(self, tmp_path: Path) -> None:
        m = self.make_modality()
        ds = m.dataset(m.demo_data(tmp_path / "demo"), train=False)
        assert len(ds) == 24 and len(set(ds.sources)) == 12
        assert ds.class_names == ["disc", "square"] and sorted(set(ds.labels)) == [0, 1]
        assert ds.load(0)["input"].shape == (3, 64, 64)
