"""Guarded plugin loading: broken plugins are recorded and skipped, never crash the host."""

from __future__ import annotations

import importlib.metadata as md
import sys
import textwrap
from pathlib import Path

import pytest

from medkit.api.errors import PluginError
from medkit.registry.host import PluginHost

GOOD = """
from medkit.api import hookimpl, StrategySpec
MEDKIT_API_VERSION = 1
@hookimpl
def medkit_register_strategies(register):
    register(StrategySpec("toy", "medkit.strategies.reference:make_sequential", summary="toy"))
"""


def _host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modules: dict[str, str]) -> PluginHost:
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in modules:
        sys.modules.pop(name, None)
    eps = [md.EntryPoint(name=n, value=n, group="medkit") for n in modules]
    eps.append(md.EntryPoint(name="builtin", value="medkit.strategies.builtin", group="medkit"))
    return PluginHost(eps)


def _record(host: PluginHost, name: str):
    return next(r for r in host.records if r.entry_point == name)


def test_good_plugin_registers(tmp_path, monkeypatch):
    host = _host(tmp_path, monkeypatch, {"goodplug": GOOD})
    assert _record(host, "goodplug").provides == {"strategy": ["toy"]}
    assert "toy" in host.names("strategy") and "sequential" in host.names("strategy")
    assert host.create("strategy", "toy").name == "sequential"


def test_import_error_is_recorded_and_skipped(tmp_path, monkeypatch):
    host = _host(tmp_path, monkeypatch, {"goodplug": GOOD, "badimport": "raise RuntimeError('boom at import')"})
    rec = _record(host, "badimport")
    assert "boom at import" in rec.error
    assert _record(host, "goodplug").error is None
    assert host.create("strategy", "toy") is not None


@pytest.mark.parametrize("source, reason", [
    ("""
    from medkit.api import hookimpl
    MEDKIT_API_VERSION = 1
    @hookimpl
    def medkit_register_strategys(register):
        pass
    """, "did you mean medkit_register_strategies"),
    ("""
    MEDKIT_API_VERSION = 1
    def medkit_register_strategies(register):
        pass
    """, "not marked with @hookimpl"),
    ("""
    from medkit.api import hookimpl
    MEDKIT_API_VERSION = 99
    @hookimpl
    def medkit_register_strategies(register):
        pass
    """, "written for medkit plugin API 99"),
    ("""
    from medkit.api import hookimpl
    @hookimpl
    def medkit_register_strategies(register):
        pass
    """, "does not declare MEDKIT_API_VERSION"),
])
def test_invalid_plugins_are_refused_with_reason(tmp_path, monkeypatch, source, reason):
    host = _host(tmp_path, monkeypatch, {"goodplug": GOOD, "brokenplug": source})
    assert reason in _record(host, "brokenplug").error
    assert _record(host, "brokenplug").provides == {}
    assert _record(host, "goodplug").error is None


def test_broken_plugin_names_are_not_registered(tmp_path, monkeypatch):
    source = GOOD.replace("MEDKIT_API_VERSION = 1", "MEDKIT_API_VERSION = 2").replace('"toy"', '"toy2"')
    host = _host(tmp_path, monkeypatch, {"futureplug": source})
    with pytest.raises(PluginError, match="unknown strategy 'toy2'.*broken plugins: futureplug"):
        host.spec("strategy", "toy2")


def test_duplicate_name_names_both_distributions(tmp_path, monkeypatch):
    host = _host(tmp_path, monkeypatch, {"dupa": GOOD, "dupb": GOOD})
    with pytest.raises(PluginError, match="provided by both dupa and dupb"):
        host.spec("strategy", "toy")
    assert "also provided by dupa" in _record(host, "dupb").error


def test_unknown_name_lists_known_suggests_and_hints_install(tmp_path, monkeypatch):
    host = _host(tmp_path, monkeypatch, {})
    with pytest.raises(PluginError) as err:
        host.spec("strategy", "rehearsl")
    msg = str(err.value)
    assert "known strategy names: joint, sequential, tfs" in msg
    assert "did you mean 'rehearsal'" in msg
    assert "pip install medkit-plugin-medcoss" in msg


def test_env_selects_and_disables_plugins(tmp_path, monkeypatch):
    other = GOOD.replace('"toy"', '"toy_b"')
    monkeypatch.setenv("MEDKIT_DISABLE_PLUGINS", "goodplug")
    host = _host(tmp_path, monkeypatch, {"goodplug": GOOD, "otherplug": other})
    assert "toy" not in host.names("strategy") and "toy_b" in host.names("strategy")
    monkeypatch.delenv("MEDKIT_DISABLE_PLUGINS")
    monkeypatch.setenv("MEDKIT_LOAD_PLUGINS", "goodplug")
    host = _host(tmp_path, monkeypatch, {"goodplug": GOOD, "otherplug": other})
    assert "toy" in host.names("strategy") and "toy_b" not in host.names("strategy")
    assert "sequential" in host.names("strategy"), "the host's builtin plugin is always loaded"


def test_event_observer_errors_do_not_stop_the_run(tmp_path, monkeypatch, caplog):
    source = GOOD + """
@hookimpl
def medkit_on_run_end(run, results):
    raise RuntimeError("observer failed")
"""
    host = _host(tmp_path, monkeypatch, {"obsplug": source})
    host.emit("run_end", run=None, results={})
    assert "observer failed" in caplog.text
