"""medkit.registry: plugin discovery, isolation of broken plugins, and the five registries."""

from __future__ import annotations

from medkit.config.store import bind_host as _bind_config_host
from medkit.registry.host import PluginHost, PluginRecord, create, get_host, reset_host

_bind_config_host(get_host)  # medkit.config's fallback for callers that pass no host= yet

__all__ = ["PluginHost", "PluginRecord", "create", "get_host", "reset_host"]
