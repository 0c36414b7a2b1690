"""No globals: importing (and using) ``medkit.registry`` binds no plugin host anywhere in the runtime;
the runtime is handed the host by its caller."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import medkit


#: Above the registry (docs/architecture.md): the CLI, and medkit.testing, which re-exports the host
#: helpers for plugin tests (a test may use the process-wide host; the runtime may not).
ABOVE_REGISTRY = ("medkit.registry", "medkit.cli", "medkit.testing")


def _runtime_modules() -> dict[str, Any]:
    return {name: mod for name, mod in list(sys.modules.items())
            if name.startswith("medkit.") and not name.startswith(ABOVE_REGISTRY) and mod is not None}


def _bound_hosts(host: Any, get_host: Any) -> list[str]:
    """Module-level names of the runtime that hold the host, or a function that fetches it."""
    found = [f"medkit.{name}" for name, value in vars(medkit).items() if value is host or value is get_host]
    for modname, module in _runtime_modules().items():
        for name, value in vars(module).items():
            if value is host or value is get_host or getattr(value, "__self__", None) is host:
                found.append(f"{modname}.{name}")
    return found


def test_importing_the_registry_binds_no_host_in_the_runtime() -> None:
    for name in ("medkit.config.store", "medkit.config.compose", "medkit.finetune.config",
                 "medkit.finetune.external", "medkit.hub.publish", "medkit.engine.continuation"):
        importlib.import_module(name)
    registry = importlib.import_module("medkit.registry")
    host = registry.get_host()  # the CLI's host, built and used
    assert not _bound_hosts(host, registry.get_host), "the runtime must be handed the host, not keep one"
    store = sys.modules["medkit.config.store"]
    assert not hasattr(store, "bind_host") and not hasattr(store, "resolve_host"), "no fallback host"


def test_the_config_layer_needs_the_host_passed() -> None:
    import inspect

    from medkit.config import compose, store

    for fn in (compose.compose, store.get_store, store.component_config):
        param = inspect.signature(fn).parameters["host"]
        assert param.default is inspect.Parameter.empty, f"{fn.__qualname__} must not default its host"
