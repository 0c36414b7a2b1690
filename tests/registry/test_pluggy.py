"""pluggy used as pluggy: plugins are registered with the plugin manager and every hook is called through
``pm.hook``, so a class-instance plugin registers, ``tryfirst`` orders implementations and wrappers
observe registration and event hooks, while one broken plugin still breaks only itself."""

from __future__ import annotations

import importlib.metadata as md
import logging
import sys
import textwrap
from pathlib import Path

import pytest

from medkit.registry.host import PluginHost


def _host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modules: dict[str, str],
          values: dict[str, str] | None = None) -> PluginHost:
    """A host over modules written to ``tmp_path``; ``values`` maps module → entry-point value."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in modules:
        sys.modules.pop(name, None)
    eps = [md.EntryPoint(name=n, value=(values or {}).get(n, n), group="medkit") for n in modules]
    eps.append(md.EntryPoint(name="builtin", value="medkit.strategies.builtin", group="medkit"))
    return PluginHost(eps)


def _record(host: PluginHost, name: str):
    return next(r for r in host.records if r.entry_point == name)


CLASS_PLUGIN = """
from medkit.api import hookimpl, StrategySpec, TaskSpec

class Toys:
    MEDKIT_API_VERSION = 1

    def __init__(self, prefix):
        self.prefix = prefix

    @hookimpl
    def medkit_register_strategies(self, register):
        register(StrategySpec(self.prefix + "_strategy", "medkit.strategies.reference:make_sequential"))

    @hookimpl
    def medkit_register_tasks(self, register):
        register(TaskSpec(self.prefix + "_task", "medkit.strategies.reference:make_sequential"))

PLUGIN = Toys("inst")
"""


def test_a_class_instance_plugin_registers_components(tmp_path, monkeypatch):
    host = _host(tmp_path, monkeypatch, {"classplug": CLASS_PLUGIN}, {"classplug": "classplug:PLUGIN"})
    record = _record(host, "classplug")
    assert record.error is None
    assert record.provides == {"strategy": ["inst_strategy"], "task": ["inst_task"]}
    assert host.provider("strategy", "inst_strategy").dist == "classplug"
    assert host.create("strategy", "inst_strategy").name == "sequential"


def test_a_class_instead_of_an_instance_is_refused(tmp_path, monkeypatch):
    host = _host(tmp_path, monkeypatch, {"classplug": CLASS_PLUGIN}, {"classplug": "classplug:Toys"})
    assert "name an instance" in _record(host, "classplug").error
    assert "inst_strategy" not in host.names("strategy")


ORDERED = """
from medkit.api import hookimpl
MEDKIT_API_VERSION = 1
CALLS = []

@hookimpl{opts}
def medkit_on_run_end(run, results):
    results.setdefault("order", []).append(__name__)
"""


def test_tryfirst_runs_before_a_later_registered_observer(tmp_path, monkeypatch):
    plain = {"aaa_first": ORDERED.format(opts=""), "zzz_last": ORDERED.format(opts="")}
    results: dict = {}
    _host(tmp_path, monkeypatch, plain).emit("run_end", run=None, results=results)
    assert results["order"] == ["zzz_last", "aaa_first"], "pluggy calls the last registered first"
    tried = {"aaa_first": ORDERED.format(opts="(tryfirst=True)"), "zzz_last": ORDERED.format(opts="")}
    results = {}
    _host(tmp_path, monkeypatch, tried).emit("run_end", run=None, results=results)
    assert results["order"] == ["aaa_first", "zzz_last"]


WRAPPER = """
from medkit.api import hookimpl
MEDKIT_API_VERSION = 1
SEEN = []

@hookimpl(wrapper=True)
def medkit_register_strategies(register):
    SEEN.append(("register: before", register.__name__))
    result = yield
    SEEN.append(("register: after", result))
    return result

@hookimpl(hookwrapper=True)
def medkit_on_step_end(run, stage, step, metrics):
    SEEN.append(("step: before", dict(metrics)))
    outcome = yield
    SEEN.append(("step: after", dict(metrics), outcome.exception))
"""

REGISTERS_AND_OBSERVES = """
from medkit.api import hookimpl, StrategySpec
MEDKIT_API_VERSION = 1

@hookimpl
def medkit_register_strategies(register):
    register(StrategySpec("observed", "medkit.strategies.reference:make_sequential"))

@hookimpl
def medkit_on_step_end(run, stage, step, metrics):
    metrics["seen_by_observer"] = step
"""


def test_a_wrapper_observes_a_registration_hook_and_an_event_hook(tmp_path, monkeypatch):
    host = _host(tmp_path, monkeypatch, {"awrapper": WRAPPER, "observer": REGISTERS_AND_OBSERVES})
    seen = sys.modules["awrapper"].SEEN
    assert seen[0][0] == "register: before" and seen[1] == ("register: after", [])
    assert "observed" in host.names("strategy") and _record(host, "awrapper").error is None
    assert _record(host, "observer").provides == {"strategy": ["observed"]}
    seen.clear()
    host.emit("step_end", run=None, stage=None, step=3, metrics={"loss": 1.0}, modality="a", role="current")
    assert seen == [("step: before", {"loss": 1.0}), ("step: after", {"loss": 1.0, "seen_by_observer": 3}, None)]


def test_a_failing_wrapper_breaks_only_its_own_plugin(tmp_path, monkeypatch, caplog):
    source = """
from medkit.api import hookimpl
MEDKIT_API_VERSION = 1

@hookimpl(wrapper=True)
def medkit_register_strategies(register):
    yield
    raise RuntimeError("wrapper broke")

@hookimpl(wrapper=True)
def medkit_on_run_end(run, results):
    yield
    raise RuntimeError("observer wrapper broke")
"""
    host = _host(tmp_path, monkeypatch, {"badwrap": source, "observer": REGISTERS_AND_OBSERVES})
    assert "wrapper broke" in _record(host, "badwrap").error
    assert _record(host, "observer").error is None and "observed" in host.names("strategy")
    caplog.set_level(logging.WARNING)
    host.emit("run_end", run=None, results={})  # the wrapper is gone with its plugin
    assert "observer wrapper broke" not in caplog.text


def test_a_failing_observer_does_not_stop_the_others_called_through_pm_hook(tmp_path, monkeypatch, caplog):
    failing = ORDERED.format(opts="(tryfirst=True)").replace('    results.setdefault', '    raise ValueError("no")\n'
                                                               '    results.setdefault')
    host = _host(tmp_path, monkeypatch, {"aaa_fails": failing, "zzz_works": ORDERED.format(opts="")})
    results: dict = {}
    host.emit("run_end", run=None, results=results)
    assert results["order"] == ["zzz_works"]
    assert "aaa_fails" in caplog.text and "ValueError: no" in caplog.text


def test_a_registration_hook_that_raises_registers_nothing_of_its_plugin(tmp_path, monkeypatch):
    source = CLASS_PLUGIN.replace("    def medkit_register_tasks(self, register):\n",
                                  "    def medkit_register_tasks(self, register):\n        raise OSError('disk')\n")
    host = _host(tmp_path, monkeypatch, {"classplug": source, "observer": REGISTERS_AND_OBSERVES},
                 {"classplug": "classplug:PLUGIN"})
    record = _record(host, "classplug")
    assert "OSError: disk" in record.error and record.provides == {}
    assert "inst_strategy" not in host.names("strategy"), "its strategy hook ran, but the plugin is broken"
    assert "observed" in host.names("strategy")
    assert not host.pm.has_plugin("classplug:classplug"), "a broken plugin's observers never run"
