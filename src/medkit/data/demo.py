"""Where built-in demo data is generated."""

from __future__ import annotations

import os
from pathlib import Path


def demo_root() -> Path:
    """Where built-in demo data is generated (``MEDKIT_DEMO_DIR`` or ``~/.cache/medkit/demo``)."""
    env = os.environ.get("MEDKIT_DEMO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "medkit" / "demo"
