"""Plugin isolation: SystemExit and other BaseExceptions from a plugin are reported, not fatal; a slow
import is named with its time; ``plugins check`` imports every factory; a plugin left out by the
environment is told apart from one that is not installed."""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest

from medkit.api.errors import PluginError
from medkit.registry import host as host_module
from medkit.registry.host import PluginHost

from ..conftest import make_dist, run_cli

GOOD = """
from medkit.api import hookimpl, StrategySpec
MEDKIT_API_VERSION = 1
@hookimpl
def medkit_register_strategies(register):
    register(StrategySpec("toy", "medkit.strategies.reference:make_sequential", summary="toy"))
"""


def _host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modules: dict[str, str],
          names: dict[str, str] | None = None) -> PluginHost:
    """A host over modules written to ``tmp_path``; ``names`` maps module → entry-point name."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in modules:
        sys.modules.pop(name, None)
    eps = [md.EntryPoint(name=(names or {}).get(n, n), value=n, group="medkit") for n in modules]
    eps.append(md.EntryPoint(name="builtin", value="medkit.strategies.builtin", group="medkit"))
    return PluginHost(eps)


def _record(host: PluginHost, name: str):
    return next(r for r in host.records if r.entry_point == name)


@pytest.mark.parametrize("source, shown", [
    ("raise SystemExit(3)", "SystemExit(3)"),
    ("import sys\nsys.exit('bye')", "SystemExit('bye')"),
    ("raise GeneratorExit('odd')", "GeneratorExit: odd"),
])
def test_a_plugin_exiting_on_import_is_reported_broken(tmp_path, monkeypatch, source, shown):
    host = _host(tmp_path, monkeypatch, {"goodplug": GOOD, "exitplug": source})
    assert shown in _record(host, "exitplug").error
    assert host.create("strategy", "toy") is not None, "the other plugins still load"


def test_keyboard_interrupt_is_not_swallowed(tmp_path, monkeypatch):
    with pytest.raises(KeyboardInterrupt):
        _host(tmp_path, monkeypatch, {"ctrlc": "raise KeyboardInterrupt"})


def test_a_registration_hook_that_exits_is_reported(tmp_path, monkeypatch):
    source = GOOD.replace('    register(StrategySpec("toy"', '    raise SystemExit(2)\n    register(StrategySpec("toy"')
    host = _host(tmp_path, monkeypatch, {"hookexit": source})
    assert "SystemExit(2)" in _record(host, "hookexit").error


def test_an_observer_that_exits_does_not_stop_the_run(tmp_path, monkeypatch, caplog):
    source = GOOD + """
@hookimpl
def medkit_on_run_end(run, results):
    raise SystemExit(0)
"""
    host = _host(tmp_path, monkeypatch, {"obsexit": source})
    host.emit("run_end", run=None, results={})
    assert "obsexit" in caplog.text and "SystemExit(0)" in caplog.text


def test_a_slow_import_is_named_with_its_time(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(host_module, "SLOW_IMPORT_S", 0.2)
    caplog.set_level(logging.WARNING, logger="medkit.registry.host")
    host = _host(tmp_path, monkeypatch, {"goodplug": GOOD, "slowplug": "import time\ntime.sleep(0.6)\n" + GOOD.replace('"toy"', '"toy2"')})
    assert _record(host, "slowplug").error is None
    msgs = [r.getMessage() for r in caplog.records]
    assert any("slowplug" in m and "still importing after" in m for m in msgs), msgs
    took = [m for m in msgs if "slowplug" in m and "took" in m]
    assert took and "MEDKIT_DISABLE_PLUGINS=slowplug" in took[0]
    seconds = float(took[0].split("took ")[1].split(" s")[0])
    assert 0.5 <= seconds < 30
    assert not any("goodplug" in m for m in msgs), "a fast plugin is not named"


def test_check_factories_reports_dangling_specs(tmp_path, monkeypatch):
    source = """
    from medkit.api import hookimpl, StrategySpec
    MEDKIT_API_VERSION = 1
    @hookimpl
    def medkit_register_strategies(register):
        register(StrategySpec("nomod", "medkit_no_such_module:make"))
        register(StrategySpec("noattr", "medkit.strategies.reference:NoSuchClass"))
        register(StrategySpec("exits", "exitfactory:make"))
    """
    host = _host(tmp_path, monkeypatch, {"danglers": source, "exitfactory": "raise SystemExit(9)"})
    assert _record(host, "danglers").error is None, "loading alone imports no factory"
    problems = dict((what.split(":")[0], what) for _, what in host.check_factories())
    assert "No module named 'medkit_no_such_module'" in problems["strategy 'nomod'"]
    assert "NoSuchClass" in problems["strategy 'noattr'"]
    assert "SystemExit(9)" in problems["strategy 'exits'"]
    assert "nomod" in _record(host, "danglers").error
    assert not [p for p in host.check_factories() if p[0].entry_point == "builtin"]


def test_disabled_and_unselected_are_told_apart_from_not_installed(tmp_path, monkeypatch):
    er = GOOD.replace('"toy"', '"er"')
    monkeypatch.setenv("MEDKIT_DISABLE_PLUGINS", "medkit-plugin-er")
    host = _host(tmp_path, monkeypatch, {"fake_er": er}, names={"fake_er": "medkit-plugin-er"})
    with pytest.raises(PluginError) as err:
        host.spec("strategy", "er")
    assert "installed but disabled by MEDKIT_DISABLE_PLUGINS" in str(err.value)
    assert "pip install" not in str(err.value)
    with pytest.raises(PluginError, match="did you mean 'er'.*installed but disabled by MEDKIT_DISABLE"):
        host.spec("strategy", "err")
    monkeypatch.delenv("MEDKIT_DISABLE_PLUGINS")
    monkeypatch.setenv("MEDKIT_LOAD_PLUGINS", "someother")
    host = _host(tmp_path, monkeypatch, {"fake_er": er}, names={"fake_er": "medkit-plugin-er"})
    with pytest.raises(PluginError, match="installed but not selected by MEDKIT_LOAD_PLUGINS"):
        host.spec("strategy", "er")
    monkeypatch.delenv("MEDKIT_LOAD_PLUGINS")
    host = _host(tmp_path, monkeypatch, {})
    with pytest.raises(PluginError, match="pip install medkit-plugin-er"):
        host.spec("strategy", "er")


# -- the same through the command line, with real installed (fake) distributions -----------------
def _env(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_cli_survives_a_plugin_that_exits_and_check_imports_factories(tmp_path):
    site = tmp_path / "site"
    make_dist(site, "medkit-plugin-exiter", "exiterplug", "raise SystemExit(3)")
    make_dist(site, "medkit-plugin-dangling", "danglingplug", """
        from medkit.api import hookimpl, StrategySpec
        MEDKIT_API_VERSION = 1
        @hookimpl
        def medkit_register_strategies(register):
            register(StrategySpec("ghost", "medkit_ghost_module:Ghost"))
        """)
    listed = run_cli("plugins", "list", env=_env(site), timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "medkit-plugin-exiter 0.1.0 (exiterplug) [BROKEN]" in listed.stdout
    assert "SystemExit(3)" in listed.stdout
    check = run_cli("plugins", "check", env=_env(site), timeout=120)
    assert check.returncode == 1
    assert "medkit-plugin-exiter" in check.stderr
    ghost = [ln for ln in check.stderr.splitlines() if ln.startswith("medkit-plugin-dangling")]
    assert ghost and "strategy 'ghost'" in ghost[0] and "No module named 'medkit_ghost_module'" in ghost[0]
    helped = run_cli("--help", env=_env(site), timeout=120)
    assert helped.returncode == 0 and "Usage" in helped.stdout
