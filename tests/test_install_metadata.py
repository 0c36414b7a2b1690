"""The install metadata, read from the pyprojects: ``medkit[all]`` and ``medkit-default`` name every
built-in plugin, and every modality plugin depends on the tokenizer and objective it defaults to."""

from __future__ import annotations

import re
import tomllib

from medkit.registry.host import PluginHost
from medkit.registry.known import DEFAULT_PLUGINS, KNOWN, MODALITY_DEFAULTS

from .conftest import REPO


def _project(path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_all_extra_names_every_plugin_folder():
    folders = {p.parent.name for p in (REPO / "plugins").glob("medkit-plugin-*/pyproject.toml")}
    extras = _project(REPO / "pyproject.toml")["optional-dependencies"]
    assert "medkit[dicom]" in extras["all"]  # the DICOM decoders come with everything
    extra = _names(extras["all"]) - {"medkit"}
    assert extra == folders, f"medkit[all] misses {folders - extra} / names unknown {extra - folders}"
    assert set(DEFAULT_PLUGINS) == folders
    for folder in folders:
        assert _project(REPO / "plugins" / folder / "pyproject.toml")["name"] == folder


def test_meta_distribution_is_the_all_extra():
    meta = _project(REPO / "plugins" / "medkit-default" / "pyproject.toml")
    assert meta["name"] == "medkit-default" and meta["dependencies"] == ["medkit[all]>=0.1"]


def test_modality_plugins_depend_on_their_defaults():
    host = PluginHost()
    for modality, (tok, obj) in MODALITY_DEFAULTS.items():
        dist = KNOWN["modality"][modality]
        deps = _names(_project(REPO / "plugins" / dist / "pyproject.toml")["dependencies"])
        spec = host.registries["modality"][modality][0]
        for kind, name in (("tokenizer", spec.meta["default_tokenizer"]), ("objective", spec.meta["default_objective"])):
            assert KNOWN[kind][name] in deps, f"{dist} defaults to {kind} {name!r} but does not depend on " \
                                              f"{KNOWN[kind][name]}"
        assert (spec.meta["default_tokenizer"], spec.meta["default_objective"]) == (tok, obj)


def test_timm_floor_is_the_one_the_encoder_needs():
    deps = _project(REPO / "pyproject.toml")["dependencies"]
    assert "timm>=1.0.16" in deps
