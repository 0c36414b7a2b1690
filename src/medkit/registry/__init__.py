"""medkit.registry: plugin discovery, isolation of broken plugins, and the five registries."""

from __future__ import annotations

from medkit.registry.host import PluginHost, PluginRecord, create, get_host, reset_host

__all__ = ["PluginHost", "PluginRecord", "create", "get_host", "reset_host"]
