"""medkit's isolated hydra-zen store: component configs built from their factories, plugin configs.

The store needs the plugin host (to find a component's factory and to let plugins add configs through
``medkit_register_configs``), but the runtime never imports :mod:`medkit.registry`: callers pass
``host=`` (the CLI passes ``medkit.registry.get_host()``). Callers that do not pass one yet use the
host bound with :func:`bind_host`, which :mod:`medkit.registry` does when it is imported.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Protocol

from medkit.api.errors import ConfigError, PluginError


class ConfigHost(Protocol):
    """What the config layer needs of the plugin host (:class:`medkit.registry.PluginHost`)."""

    def spec(self, kind: str, name: str) -> Any: ...

    def provider(self, kind: str, name: str) -> Any: ...

    def call_guarded(self, hook: str, **kwargs: Any) -> None: ...

    def require_run(self, modalities: Any, strategy: str) -> None: ...


_STORES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_BOUND: Callable[[], ConfigHost] | None = None


def bind_host(resolver: Callable[[], ConfigHost] | None) -> None:
    """Set the fallback used when no ``host=`` is passed (a callable returning the current host)."""
    global _BOUND
    _BOUND = resolver


def resolve_host(host: ConfigHost | None = None) -> ConfigHost:
    """``host``, or the bound fallback's current host."""
    if host is not None:
        return host
    if _BOUND is None:
        raise ConfigError("medkit.config needs the plugin host: pass host=medkit.registry.get_host() "
                          "(or import medkit.registry, which binds it)")
    return _BOUND()


def get_store(host: ConfigHost | None = None) -> Any:
    """The isolated :class:`hydra_zen.ZenStore` of ``host`` (never merged into Hydra's global store),
    with plugin-provided configs (``medkit_register_configs``) added on first use; one per host."""
    from hydra_zen import ZenStore

    host = resolve_host(host)
    store = _STORES.get(host)
    if store is None:
        store = ZenStore(name="medkit", deferred_to_config=False, overwrite_ok=True)
        _STORES[host] = store
        host.call_guarded("medkit_register_configs", store=store)
    return store


def reset_stores() -> None:
    """Forget every store (tests; a new host gets a fresh store anyway)."""
    _STORES.clear()


def component_config(kind: str, name: str, host: ConfigHost | None = None) -> Any:
    """The hydra-zen ``builds`` of a component's factory (every user parameter, with defaults),
    stored in the isolated store under group ``kind``."""
    from hydra_zen import builds

    host = resolve_host(host)
    store = get_store(host)
    if (kind, name) in store:
        return store[kind, name]
    spec = host.spec(kind, name)
    try:
        factory = spec.load_factory()
        cfg = builds(factory, populate_full_signature=True, zen_exclude=tuple(spec.context))
    except PluginError:
        raise
    except Exception as exc:
        dist = host.provider(kind, name).dist
        raise PluginError(f"{kind} {name!r} from {dist}: cannot build its config from factory "
                          f"{spec.factory!r}: {exc}") from exc
    store(cfg, group=kind, name=name)
    return cfg
