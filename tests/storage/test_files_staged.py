"""storage.files.staged_directory: all of the new directory or none of it, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from medkit.storage.files import staged_directory


def test_a_failed_block_leaves_the_old_directory_and_no_staging(tmp_path: Path) -> None:
    final = tmp_path / "run"
    final.mkdir()
    (final / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_directory(final) as staging:
            (staging / "a.txt").write_text("new")
            raise RuntimeError("crash while filling")
    assert (final / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging left behind


def test_a_finished_block_replaces_it_with_umask_permissions(tmp_path: Path) -> None:
    final = tmp_path / "out" / "run"
    with staged_directory(final) as staging:
        (staging / "a.txt").write_text("new")
    assert (final / "a.txt").read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's private 0700
    assert sorted(p.name for p in final.parent.iterdir()) == ["run"]
