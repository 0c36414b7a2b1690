"""Discovery and guarded loading of ``medkit`` entry points; the five registries."""

from __future__ import annotations

import difflib
import importlib.metadata as md
import logging
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable

import pluggy

from medkit.api import API_VERSION
from medkit.api import hookspecs
from medkit.api.errors import PluginError
from medkit.api.specs import KINDS, ComponentSpec
from medkit.registry.known import KNOWN, provider_of

log = logging.getLogger(__name__)

GROUP = "medkit"
REGISTRATION_HOOKS: dict[str, str] = {
    "modality": "medkit_register_modalities",
    "tokenizer": "medkit_register_tokenizers",
    "objective": "medkit_register_objectives",
    "strategy": "medkit_register_strategies",
    "task": "medkit_register_tasks",
}
SPEC_NAMES = frozenset(n for n in dir(hookspecs) if n.startswith("medkit_"))


@dataclass
class PluginRecord:
    """One ``medkit`` entry point: where it comes from, what it provides, and why it broke."""

    entry_point: str
    dist: str
    version: str
    module: str
    provides: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    would_provide: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.entry_point, "distribution": self.dist, "version": self.version,
                "module": self.module, "provides": self.provides, "error": self.error}


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {x.strip() for x in raw.split(",") if x.strip()}


def _validate_module(module: ModuleType) -> None:
    """Refuse a plugin module for an incompatible API or a misspelled/unmarked hook."""
    declared = getattr(module, "MEDKIT_API_VERSION", None)
    if declared is None:
        raise PluginError(f"module {module.__name__} does not declare MEDKIT_API_VERSION; add "
                          f"MEDKIT_API_VERSION = {API_VERSION} next to its hooks")
    if not isinstance(declared, int) or declared != API_VERSION:
        raise PluginError(f"written for medkit plugin API {declared!r}, but this medkit provides API "
                          f"{API_VERSION}; install a version of the plugin made for this medkit")
    for attr, value in vars(module).items():
        if not attr.startswith("medkit_") or not callable(value):
            continue
        if attr not in SPEC_NAMES:
            close = difflib.get_close_matches(attr, sorted(SPEC_NAMES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise PluginError(f"unknown hook {attr}{hint}")
        if not hasattr(value, f"{hookspecs.PROJECT}_impl"):
            raise PluginError(f"hook {attr} is not marked with @hookimpl "
                              f"(from medkit.api import hookimpl)")


class PluginHost:
    """Loads every ``medkit`` entry point in its own guard and holds the five registries."""

    def __init__(self, entry_points: Iterable[md.EntryPoint] | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self.registries: dict[str, dict[str, tuple[ComponentSpec, PluginRecord]]] = {k: {} for k in KINDS}
        self.clashes: dict[tuple[str, str], list[str]] = {}
        eps = list(entry_points) if entry_points is not None else list(md.entry_points(group=GROUP))
        load_only, disabled = _env_list("MEDKIT_LOAD_PLUGINS"), _env_list("MEDKIT_DISABLE_PLUGINS") or set()
        for ep in sorted(eps, key=lambda e: (e.name != "builtin", e.name)):
            dist = ep.dist.name if getattr(ep, "dist", None) is not None else ep.name
            version = ep.dist.version if getattr(ep, "dist", None) is not None else "?"
            selectors = {ep.name, dist}
            if selectors & disabled:
                continue
            if load_only is not None and ep.name != "builtin" and not selectors & load_only:
                continue
            self._load(ep, dist, version)
        self.pm.check_pending()

    # -- loading ---------------------------------------------------------------------------
    def _load(self, ep: md.EntryPoint, dist: str, version: str) -> None:
        record = PluginRecord(entry_point=ep.name, dist=dist, version=version, module=ep.value)
        self.records.append(record)
        for kind, names in KNOWN.items():  # what a broken distribution would have provided
            mine = [n for n, d in names.items() if d == dist]
            if mine:
                record.would_provide[kind] = mine
        try:
            module = ep.load()
            if not isinstance(module, ModuleType):
                raise PluginError(f"entry point must name a module, got {type(module).__name__}")
            specs = self._collect(module)
            _validate_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must never crash the host
            record.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PluginError) else str(exc)
            log.warning("plugin %s (%s) skipped: %s", ep.name, dist, record.error)
            return
        try:
            self.pm.register(module, name=f"{dist}:{ep.name}")
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            record.error = f"{type(exc).__name__}: {exc}"
            return
        for spec in specs:
            table = self.registries[spec.kind]
            if spec.name in table:
                other = table[spec.name][1]
                self.clashes[(spec.kind, spec.name)] = [other.dist, dist]
                msg = (f"{spec.kind} {spec.name!r} is also provided by {other.dist}; "
                       f"disable one with MEDKIT_DISABLE_PLUGINS")
                record.error = f"{record.error}; {msg}" if record.error else msg
                continue
            table[spec.name] = (spec, record)
            record.provides.setdefault(spec.kind, []).append(spec.name)

    def _collect(self, module: ModuleType) -> list[ComponentSpec]:
        """Call the module's registration hooks with a collecting ``register``."""
        collected: list[ComponentSpec] = []
        for kind, hook in REGISTRATION_HOOKS.items():
            fn = getattr(module, hook, None)
            if fn is None:
                continue

            def register(spec: ComponentSpec, _kind: str = kind) -> None:
                if not isinstance(spec, ComponentSpec):
                    raise PluginError(f"{hook} registered {spec!r}, not a spec from medkit.api")
                if spec.kind and spec.kind != _kind:
                    raise PluginError(f"{hook} registered a {spec.kind} spec {spec.name!r}")
                collected.append(spec if spec.kind else ComponentSpec(
                    spec.name, spec.factory, spec.summary, spec.context, spec.meta, kind=_kind))

            fn(register)
        return collected

    # -- lookup ----------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.registries[kind])

    def spec(self, kind: str, name: str) -> ComponentSpec:
        """The spec registered as ``name`` of ``kind``, or a :class:`PluginError` that helps."""
        if kind not in self.registries:
            raise PluginError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        if (kind, name) in self.clashes:
            a, b = self.clashes[(kind, name)]
            raise PluginError(f"{kind} {name!r} is provided by both {a} and {b}; uninstall one or set "
                              f"MEDKIT_DISABLE_PLUGINS={b}")
        if name in self.registries[kind]:
            return self.registries[kind][name][0]
        for record in self.records:
            if record.error and name in record.would_provide.get(kind, []):
                raise PluginError(f"{kind} {name!r} comes from plugin {record.dist} {record.version}, "
                                  f"which failed to load: {record.error}")
        known = self.names(kind)
        msg = f"unknown {kind} {name!r}; known {kind} names: {', '.join(known) or 'none installed'}"
        close = difflib.get_close_matches(name, known + list(KNOWN.get(kind, {})), n=1)
        target = name
        if close and close[0] != name:
            msg += f"; did you mean {close[0]!r}?"
            target = close[0]
        dist = provider_of(kind, target)
        if dist and target not in known:
            msg += f" install it with: pip install {dist}"
        broken = [r.dist for r in self.records if r.error]
        if broken:
            msg += f" (broken plugins: {', '.join(broken)}; see medkit plugins check)"
        raise PluginError(msg)

    def provider(self, kind: str, name: str) -> PluginRecord:
        self.spec(kind, name)
        return self.registries[kind][name][1]

    def create(self, kind: str, name: str, **overrides: Any) -> Any:
        """Build ``name`` of ``kind`` through its registered factory."""
        spec = self.spec(kind, name)
        try:
            factory = spec.load_factory()
        except Exception as exc:  # noqa: BLE001
            dist = self.registries[kind][name][1].dist
            raise PluginError(f"{kind} {name!r} from {dist}: cannot import its factory "
                              f"{spec.factory!r}: {exc}") from exc
        return factory(**overrides)

    def distributions(self) -> list[str]:
        """Names of the loaded plugin distributions (manifests record their versions)."""
        return [r.dist for r in self.records]

    def call_guarded(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook``; an observer that raises is logged, not fatal."""
        caller: Callable[..., Any] = getattr(self.pm.hook, hook)
        for impl in caller.get_hookimpls():
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception as exc:  # noqa: BLE001
                log.warning("plugin %s failed in %s: %s", impl.plugin_name, hook, exc)

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
