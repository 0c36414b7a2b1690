"""medkit's isolated hydra-zen store: component configs built from their factories, plugin configs.

The store needs the plugin host (to find a component's factory and to let plugins add configs through
``medkit_register_configs``), but the runtime never imports :mod:`medkit.registry` and keeps no host of
its own: every caller passes ``host`` (the CLI passes the one it built, ``medkit.registry.get_host()``).
"""

from __future__ import annotations

import weakref
from typing import Any

from medkit.api.components import Components
from medkit.api.errors import PluginError

#: The plugin host the config layer is handed: the one host protocol, :class:`medkit.api.components.Components`.
ConfigHost = Components


_STORES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # host → its store (not a host)


def get_store(host: ConfigHost) -> Any:
    """The isolated :class:`hydra_zen.ZenStore` of ``host`` (never merged into Hydra's global store),
    with plugin-provided configs (``medkit_register_configs``) added on first use; one per host."""
    from hydra_zen import ZenStore

    store = _STORES.get(host)
    if store is None:
        store = ZenStore(name="medkit", deferred_to_config=False, overwrite_ok=True)
        _STORES[host] = store
        host.call_guarded("medkit_register_configs", store=store)
    return store


def reset_stores() -> None:
    """Forget every store (tests; a new host gets a fresh store anyway)."""
    _STORES.clear()


def component_config(kind: str, name: str, host: ConfigHost) -> Any:
    """The hydra-zen ``builds`` of a component's factory (every user parameter, with defaults),
    stored in the isolated store under group ``kind``."""
    from hydra_zen import builds

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
