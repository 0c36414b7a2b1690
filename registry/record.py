"""One loaded (or broken) ``medkit`` entry point: its distribution, what it provides, its error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
