"""A run's missing plugins are named all at once, each with why it is missing and one fix line."""

from __future__ import annotations

import importlib.metadata as md

import pytest

from medkit.api.errors import PluginError
from medkit.registry.host import PluginHost
from medkit.registry.known import DEFAULT_PLUGINS, MODALITY_DEFAULTS


def _installed(*keep: str) -> list[md.EntryPoint]:
    """The installed entry points of ``medkit`` and of the distributions in ``keep`` only."""
    out = []
    for ep in md.entry_points(group="medkit"):
        dist = ep.dist.name if ep.dist is not None else ep.name
        if ep.name == "builtin" or dist in keep:
            out.append(ep)
    return out


def _error(host: PluginHost, modalities: list[str], strategy: str = "sequential") -> str:
    with pytest.raises(PluginError) as err:
        host.require_run(modalities, strategy)
    return str(err.value)


def test_only_pathology_installed_names_every_missing_distribution():
    host = PluginHost(_installed("medkit-plugin-pathology"))
    assert "pathology" in host.names("modality")
    msg = _error(host, ["pathology"])
    assert "tokenizer 'patch_2d' (medkit-plugin-tokenizers: not installed)" in msg
    assert "objective 'mae' (medkit-plugin-mae: not installed)" in msg
    assert "pip install medkit-plugin-tokenizers medkit-plugin-mae" in msg
    assert 'pip install "medkit[all]"' in msg


def test_missing_modality_brings_its_defaults_and_the_strategy():
    host = PluginHost(_installed())
    msg = _error(host, ["report", "ct"], strategy="rehearsal")
    for dist in ("medkit-plugin-report", "medkit-plugin-ct", "medkit-plugin-tokenizers",
                 "medkit-plugin-mlm", "medkit-plugin-mae", "medkit-plugin-medcoss"):
        assert dist in msg
    line = msg.split("pip install ", 1)[1].split(" (", 1)[0].split()
    assert len(line) == len(set(line)), "each distribution once on the install line"


def test_disabled_and_unselected_are_told_apart(monkeypatch):
    monkeypatch.setenv("MEDKIT_DISABLE_PLUGINS", "medkit-plugin-mae")
    host = PluginHost()
    msg = _error(host, ["pathology"])
    assert "objective 'mae' (medkit-plugin-mae: disabled by MEDKIT_DISABLE_PLUGINS)" in msg
    assert "remove medkit-plugin-mae from MEDKIT_DISABLE_PLUGINS" in msg and "pip install" not in msg
    monkeypatch.delenv("MEDKIT_DISABLE_PLUGINS")
    monkeypatch.setenv("MEDKIT_LOAD_PLUGINS", "medkit-plugin-pathology")
    msg = _error(PluginHost(), ["pathology"])
    assert "(medkit-plugin-tokenizers: not selected by MEDKIT_LOAD_PLUGINS)" in msg
    assert "(medkit-plugin-mae: not selected by MEDKIT_LOAD_PLUGINS)" in msg
    assert "add medkit-plugin-tokenizers, medkit-plugin-mae to MEDKIT_LOAD_PLUGINS" in msg


def test_everything_installed_passes():
    PluginHost().require_run(["report", "xray", "ct", "mri", "pathology"], "rehearsal")


def test_modality_defaults_match_the_plugins():
    """The built-in defaults used when a modality is missing are the ones its spec declares."""
    host = PluginHost()
    for name, (tok, obj) in MODALITY_DEFAULTS.items():
        meta = host.registries["modality"][name][0].meta
        assert (meta["default_tokenizer"], meta["default_objective"]) == (tok, obj), name
    provided = {r.dist for r in host.records if r.provides}
    assert provided - {"medkit"} <= set(DEFAULT_PLUGINS)
