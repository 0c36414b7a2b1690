"""The one host protocol: what the runtime is handed instead of importing the plugin registry.

The CLI (or a test, or a notebook through :func:`medkit.load_pretrained`) builds the plugin host in
``medkit.registry`` and passes it in; the runtime (the engine, fine-tuning, the config store) only sees
:class:`Components`, so the import rule ``cli → registry → runtime`` holds (tests/test_import_rules.py
enforces it).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol, runtime_checkable

from medkit.api.specs import ComponentSpec

#: ``create(kind, name, **overrides)``: build a registered component by name.
Create = Callable[..., Any]


@runtime_checkable
class Components(Protocol):
    """The plugin host as the runtime sees it (``medkit.registry.PluginHost`` implements it): the
    registered components of the installed plugins, their providers, and the hooks they implement."""

    def create(self, kind: str, name: str, **overrides: Any) -> Any:
        """Build ``name`` of ``kind`` through its registered factory."""

    def spec(self, kind: str, name: str) -> ComponentSpec:
        """The spec registered as ``name`` of ``kind`` (a PluginError that helps otherwise)."""

    def names(self, kind: str) -> list[str]:
        """Registered names of ``kind``."""

    def emit(self, event: str, **kwargs: Any) -> None:
        """Fire an event hook (``run_start``, ``step_end``…) to every observer plugin."""

    def distributions(self) -> list[str]:
        """Names of the loaded plugin distributions (recorded in manifests)."""

    def provider(self, kind: str, name: str) -> Any:
        """The record of the plugin that registered ``name`` of ``kind`` (its distribution, version…)."""

    def call_guarded(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of the hook named ``hook`` (``medkit_register_configs``…); one that
        raises is logged, not fatal."""

    def require_run(self, modalities: Iterable[str], strategy: str) -> None:
        """Raise a PluginError naming what to install when a run of ``modalities`` with ``strategy``
        needs a component no installed plugin provides."""


#: Where the ``medkit`` command keeps the plugin host for plugin commands (``ctx.obj[COMPONENTS_KEY]``).
COMPONENTS_KEY = "components"


def components_of(ctx: Any) -> Components:
    """The plugin host, inside a plugin's click command (``medkit_register_commands``): plugins never
    import the registry; the ``medkit`` command hands it over on the click context."""
    root = ctx.find_root()
    factory = (root.obj or {}).get(COMPONENTS_KEY)
    if factory is None:
        raise RuntimeError("this command was not started by the medkit command line (no plugin host on "
                           "the click context)")
    return factory()
