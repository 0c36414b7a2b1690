"""Where built-in demo data is generated, and the atomic writers every demo uses."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

MARKER = ".medkit-demo.json"


def demo_root() -> Path:
    """Where built-in demo data is generated (``MEDKIT_DEMO_DIR`` or ``~/.cache/medkit/demo``)."""
    env = os.environ.get("MEDKIT_DEMO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "medkit" / "demo"


def demo_is_current(root: Path, version: int) -> bool:
    """Whether ``root`` holds a complete demo of ``version`` (its marker file says so)."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("version") == version
    except (OSError, ValueError):
        return False


def mark_demo(root: Path, modality: str, version: int) -> Path:
    """Write the marker that records a complete demo (the last file a demo writer writes)."""
    marker = Path(root) / MARKER
    tmp = marker.with_name(f"{MARKER}.tmp")
    tmp.write_text(json.dumps({"modality": modality, "version": version}))
    os.replace(tmp, marker)
    return Path(root)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV with ``header`` atomically (a temp name, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(header))
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def save_image(path: Path, img: Any, **save: Any) -> Path:
    """Save a Pillow image atomically; ``save`` goes to ``Image.save`` (format defaults to the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fmt = save.pop("format", None) or {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF",
                                       ".tiff": "TIFF"}.get(path.suffix.lower(), "PNG")
    img.save(tmp, format=fmt, **save)
    os.replace(tmp, path)
    return path
