"""The backbones plugin: its five released models register as the ``backbone`` kind, each factory is the
family (calling it builds the model), and only DeSD offers the fusion CNN."""

from __future__ import annotations

import importlib.metadata as md

import pytest

from medkit.api import ExternalBackbone, Family
from medkit.testing import PluginHost

NAMES = ["desd", "path-dino", "pcrlv2-2d", "pcrlv2-3d", "unimiss"]


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """A host with this plugin registered in-process (whether or not it is installed)."""
    return PluginHost([md.EntryPoint(name="backbones", value="medkit_plugin_backbones", group="medkit")])


def test_the_five_released_models_register_as_backbones(host: PluginHost) -> None:
    record = next(r for r in host.records if r.entry_point == "backbones")
    assert record.error is None and sorted(record.provides["backbone"]) == NAMES and list(record.provides) == ["backbone"]
    assert host.names("backbone") == NAMES
    for name in NAMES:
        spec = host.spec("backbone", name)
        assert spec.kind == "backbone" and spec.summary
    assert not host.check_factories(), "every factory imports"


@pytest.mark.parametrize("name", NAMES)
def test_each_factory_is_its_family_and_builds_the_model(host: PluginHost, name: str) -> None:
    family = host.spec("backbone", name).load_factory()
    assert isinstance(family, Family) and family.name == name and family.dims and family.title
    backbone = host.create("backbone", name, dims=family.dims[0])
    assert isinstance(backbone, ExternalBackbone) and backbone.family == name and backbone.dims == family.dims[0]
    assert (family.fusion is not None) == (name == "desd"), "only DeSD provides the ViT + CNN fusion branch"


def test_a_dimension_the_family_cannot_take_is_refused(host: PluginHost) -> None:
    from medkit.api import ConfigError

    with pytest.raises(ConfigError, match="DeSD is a 3D model; the data are 2D"):
        host.create("backbone", "desd", dims=2)


def test_the_plugin_imports_only_the_public_api() -> None:
    import ast
    from pathlib import Path

    import medkit_plugin_backbones

    bad = []
    for path in Path(medkit_plugin_backbones.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "medkit" and n != "medkit.api"]
    assert not bad, bad
