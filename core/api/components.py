"""What the runtime is handed instead of importing the plugin registry (dependency inversion).

The CLI (or a test, or a notebook through :func:`medkit.load_pretrained`) builds the plugin host in
``medkit.registry`` and passes it in; the runtime only sees this protocol, so the import rule
``cli → registry → runtime`` holds (tests/test_import_rules.py enforces it).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from medkit.api.specs import ComponentSpec

#: ``create(kind, name, **overrides)``: build a registered component by name.
Create = Callable[..., Any]


@runtime_checkable
class Components(Protocol):
    """The registered components of the installed plugins (``medkit.registry.PluginHost``)."""

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
