"""Discovery and guarded loading of ``medkit`` entry points into the pluggy plugin manager; the registries."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata as md
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import pluggy

from medkit.api import hookspecs
from medkit.api.errors import PluginError
from medkit.api.specs import KINDS, ComponentSpec
from medkit.registry.known import KNOWN
from medkit.registry.loading import check_pending, culprit, describe as _describe, guard, validate_plugin
from medkit.registry.lookup import RegistryLookup
from medkit.registry.record import PluginRecord

log = logging.getLogger(__name__)

GROUP = "medkit"
REGISTRATION_HOOKS: dict[str, str] = {
    "modality": "medkit_register_modalities",
    "tokenizer": "medkit_register_tokenizers",
    "objective": "medkit_register_objectives",
    "strategy": "medkit_register_strategies",
    "task": "medkit_register_tasks",
    "backbone": "medkit_register_backbones",
}
#: A plugin whose import takes longer than this is named in a warning (it delays every command).
SLOW_IMPORT_S = 2.0


def _timed_load(ep: md.EntryPoint, dist: str) -> Any:
    """``ep.load()``, warning while it takes longer than :data:`SLOW_IMPORT_S` and after, with the time."""
    start = time.perf_counter()
    done = threading.Event()

    def still_loading() -> None:
        if not done.is_set():
            log.warning("plugin %s (%s) is still importing after %.0f s; every medkit command waits for it "
                        "(skip it with MEDKIT_DISABLE_PLUGINS=%s)", ep.name, dist, SLOW_IMPORT_S, ep.name)

    timer = threading.Timer(SLOW_IMPORT_S, still_loading)
    timer.daemon = True
    timer.start()
    try:
        return ep.load()
    finally:
        done.set()
        timer.cancel()
        took = time.perf_counter() - start
        if took > SLOW_IMPORT_S:
            log.warning("plugin %s (%s) took %.1f s to import; every medkit command waits for it (skip it "
                        "with MEDKIT_DISABLE_PLUGINS=%s)", ep.name, dist, took, ep.name)


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {x.strip() for x in raw.split(",") if x.strip()}


class PluginHost(RegistryLookup):
    """Loads every ``medkit`` entry point in its own guard into a pluggy ``PluginManager`` and holds
    the registries its registration hooks fill (looked up through :class:`RegistryLookup`)."""

    def __init__(self, entry_points: Iterable[md.EntryPoint] | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self.registries: dict[str, dict[str, tuple[ComponentSpec, PluginRecord]]] = {k: {} for k in KINDS}
        self.clashes: dict[tuple[str, str], list[str]] = {}
        #: distribution (and entry point) name → why it was not loaded (disabled / not selected)
        self.skipped: dict[str, str] = {}
        self.skipped_dists: list[str] = []
        self._by_name: dict[str, PluginRecord] = {}  # pluggy plugin name → its record
        self._current: tuple[PluginRecord, str] | None = None  # whose registration hook is running
        self._collected: dict[str, list[ComponentSpec]] = {}
        eps = list(entry_points) if entry_points is not None else list(md.entry_points(group=GROUP))
        load_only, disabled = _env_list("MEDKIT_LOAD_PLUGINS"), _env_list("MEDKIT_DISABLE_PLUGINS") or set()
        for ep in sorted(eps, key=lambda e: (e.name != "builtin", e.name)):
            ep_dist = getattr(ep, "dist", None)
            dist = ep_dist.name if ep_dist is not None else ep.name
            version = ep_dist.version if ep_dist is not None else "?"
            selectors = {ep.name, dist}
            if selectors & disabled:
                self.skipped.update(dict.fromkeys(selectors, "disabled by MEDKIT_DISABLE_PLUGINS"))
                self.skipped_dists.append(dist)
                continue
            if load_only is not None and ep.name != "builtin" and not selectors & load_only:
                self.skipped.update(dict.fromkeys(selectors, "not selected by MEDKIT_LOAD_PLUGINS"))
                self.skipped_dists.append(dist)
                continue
            self._load(ep, dist, version)
        self._register_all()
        self.pm.check_pending()

    # -- loading ---------------------------------------------------------------------------
    def _load(self, ep: md.EntryPoint, dist: str, version: str) -> None:
        """Import one entry point (a module or an object such as a class instance), check it and
        register it with the plugin manager; anything it raises marks only this plugin broken."""
        record = PluginRecord(entry_point=ep.name, dist=dist, version=version, module=ep.value)
        self.records.append(record)
        for kind, names in KNOWN.items():  # what a broken distribution would have provided
            mine = [n for n, d in names.items() if d == dist]
            if mine:
                record.would_provide[kind] = mine
        name = f"{dist}:{ep.name}"
        plugin: object = None
        try:
            plugin = _timed_load(ep, dist)
            validate_plugin(plugin)
            self.pm.register(plugin, name=name)
            check_pending(self.pm)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a broken plugin (even SystemExit) never stops the host
            if plugin is not None and self.pm.get_name(plugin) == name:
                self.pm.unregister(name=name)
            record.error = _describe(exc)
            log.warning("plugin %s (%s) skipped: %s", ep.name, dist, record.error)
            return
        self._by_name[name] = record
        for caller in self.pm.get_hookcallers(plugin) or []:
            scope: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
            if caller.name in REGISTRATION_HOOKS.values():
                scope = functools.partial(self._running, record, caller.name)
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    guard(impl, self._on_error(record, caller.name), scope)

    @contextlib.contextmanager
    def _running(self, record: PluginRecord, hook: str) -> Iterator[None]:
        """Attribute the ``register(spec)`` calls made meanwhile to ``record``'s plugin and ``hook``."""
        self._current = (record, hook)
        try:
            yield
        finally:
            self._current = None

    def _on_error(self, record: PluginRecord, hook: str) -> Callable[[BaseException], None]:
        """What happens when ``record``'s implementation of ``hook`` raises: a registration hook marks
        the plugin broken (nothing of it is registered); any other hook is logged, and the run goes on."""
        def report(exc: BaseException) -> None:
            if hook in REGISTRATION_HOOKS.values():
                record.error = record.error or _describe(exc)  # logged when the plugin is dropped
            else:
                log.warning("plugin %s failed in %s: %s", f"{record.dist}:{record.entry_point}", hook,
                            _describe(exc))
        return report

    def _register_all(self) -> None:
        """Call every registration hook once through ``pm.hook``; each ``register(spec)`` goes to the
        plugin whose implementation is running. A plugin whose hook (or wrapper) raises is removed
        with nothing registered; a wrapper's failure reruns the calls without its plugin."""
        while True:
            self._collected = {name: [] for name in self._by_name}
            try:
                for hook in REGISTRATION_HOOKS.values():
                    getattr(self.pm.hook, hook)(register=self._register)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # only a wrapper gets here (implementations are guarded)
                impls = [i for h in REGISTRATION_HOOKS.values()
                         for i in getattr(self.pm.hook, h).get_hookimpls()]
                name = culprit(exc, impls)
                if name is None:
                    raise
                self._by_name[name].error = _describe(exc)
                self._drop(name)
                continue
            break
        for name, record in list(self._by_name.items()):
            if record.error:
                self._drop(name)
                continue
            for spec in self._collected[name]:
                self._add(spec, record)

    def _drop(self, name: str) -> None:
        record = self._by_name.pop(name)
        log.warning("plugin %s (%s) skipped: %s", record.entry_point, record.dist, record.error)
        self.pm.unregister(name=name)

    def _register(self, spec: ComponentSpec) -> None:
        """The ``register`` callback every registration hook receives."""
        if self._current is None:
            raise PluginError(f"register({spec!r}) was called outside a registration hook implementation "
                              f"(a hook wrapper observes registration; it does not register)")
        record, hook = self._current
        kind = next(k for k, h in REGISTRATION_HOOKS.items() if h == hook)
        if not isinstance(spec, ComponentSpec):
            raise PluginError(f"{hook} registered {spec!r}, not a spec from medkit.api")
        if spec.kind and spec.kind != kind:
            raise PluginError(f"{hook} registered a {spec.kind} spec {spec.name!r}")
        self._collected[f"{record.dist}:{record.entry_point}"].append(spec if spec.kind else ComponentSpec(
            spec.name, spec.factory, spec.summary, spec.context, spec.meta, kind=kind))

    def _add(self, spec: ComponentSpec, record: PluginRecord) -> None:
        table = self.registries[spec.kind]
        if spec.name in table:
            other = table[spec.name][1]
            self.clashes[(spec.kind, spec.name)] = [other.dist, record.dist]
            msg = (f"{spec.kind} {spec.name!r} is also provided by {other.dist}; "
                   f"disable one with MEDKIT_DISABLE_PLUGINS")
            record.error = f"{record.error}; {msg}" if record.error else msg
            return
        table[spec.name] = (spec, record)
        record.provides.setdefault(spec.kind, []).append(spec.name)

    def call_guarded(self, hook: str, **kwargs: Any) -> None:
        """Call ``hook`` through ``pm.hook``; an implementation that raises is logged, not fatal, and
        the others still run (see :func:`medkit.registry.loading.guard`). A wrapper that raises is
        logged too (its exception ended the call)."""
        caller = getattr(self.pm.hook, hook)
        try:
            caller(**kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # an observer (even SystemExit) never stops a run
            who = culprit(exc, caller.get_hookimpls())
            if who is None:
                raise
            log.warning("plugin %s failed in %s: %s", who, hook, _describe(exc))

    def emit(self, event: str, **kwargs: Any) -> None:
        """Fire an event hook (``run_start``, ``step_end``...) to every observer."""
        self.call_guarded(f"medkit_on_{event}", **kwargs)


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


def reset_host(host: PluginHost | None = None) -> None:
    """Forget (or replace) the process-wide host; tests use it after changing the environment."""
    global _HOST
    _HOST = host


def create(kind: str, name: str, **overrides: Any) -> Any:
    """Build a component of ``kind`` named ``name`` (``create("strategy", "joint")``)."""
    return get_host().create(kind, name, **overrides)
