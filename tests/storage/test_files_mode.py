"""Atomically written files get the permissions of a plain ``open()`` under the umask, not 0600."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medkit.storage.files import atomic_write_bytes, atomic_write_file, atomic_write_json


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.png", b"\x89PNG")
        atomic_write_json(tmp_path / "b.json", {"x": 1})
        atomic_write_file(tmp_path / "c.bin", lambda name: Path(name).write_bytes(b"c"))
        with open(tmp_path / "plain.md", "w") as fh:  # what report.md gets
            fh.write("x")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"a.png": mode, "b.json": mode, "c.bin": mode, "plain.md": mode}
