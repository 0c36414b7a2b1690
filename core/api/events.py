"""The records event hooks receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunInfo:
    run_dir: Path
    config: dict[str, Any]
    stages: list[list[str]]
    resumed: bool = False


@dataclass(frozen=True)
class StageInfo:
    index: int  # 0-based
    modalities: list[str]
    max_steps: int
    start_step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
