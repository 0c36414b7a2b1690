"""medkit.registry: plugin discovery, isolation of broken plugins, the registries; binds nothing at import."""

from __future__ import annotations

from medkit.registry.host import PluginHost, PluginRecord, create, get_host, reset_host

__all__ = ["PluginHost", "PluginRecord", "create", "get_host", "reset_host"]
