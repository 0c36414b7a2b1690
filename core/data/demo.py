"""Where built-in demo data is generated, and the atomic writers every demo uses."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from medkit.storage.files import atomic_write_bytes, atomic_write_text

MARKER = ".medkit-demo.json"


def demo_root() -> Path:
    """Where built-in demo data is generated (``MEDKIT_DEMO_DIR`` or ``~/.cache/medkit/demo``)."""
    env = os.environ.get("MEDKIT_DEMO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "medkit" / "demo"


def is_demo_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies in the built-in demo data folder (:func:`demo_root`): synthetic data a
    run read because no ``--data`` was given (or was pointed at the demo folder)."""
    try:
        Path(path).resolve().relative_to(demo_root().resolve())
    except ValueError:
        return False
    return True


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
    atomic_write_text(Path(root) / MARKER, json.dumps({"modality": modality, "version": version}))
    return Path(root)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV with ``header`` atomically (a temp name, then a rename)."""
    path = Path(path)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(list(header))
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
    return path


def save_image(path: Path, img: Any, **save: Any) -> Path:
    """Save a Pillow image atomically; ``save`` goes to ``Image.save`` (format defaults to the suffix)."""
    path = Path(path)
    fmt = save.pop("format", None) or {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF",
                                       ".tiff": "TIFF"}.get(path.suffix.lower(), "PNG")
    data = io.BytesIO()
    img.save(data, format=fmt, **save)
    atomic_write_bytes(path, data.getvalue())
    return path
