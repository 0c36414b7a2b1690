"""Atomic replacement when both names are one inode, temp files removed on a full disk, and the sweep
of an interrupted write's leftovers (only medkit's own names, never through a link)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from medkit.api.errors import CheckpointError
from medkit.storage import files


def test_linking_a_file_onto_its_own_inode_leaves_no_temp_name(tmp_path: Path) -> None:
    src = tmp_path / "checkpoint" / "best.safetensors"
    src.parent.mkdir()
    src.write_bytes(b"weights")
    dst = tmp_path / "best.safetensors"
    files.atomic_link(src, dst)
    files.atomic_link(src, dst)  # already that inode: POSIX rename(tmp, dst) would do nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "checkpoint"]
    assert dst.stat().st_ino == src.stat().st_ino and src.stat().st_nlink == 2


def test_replace_removes_the_temp_name_when_both_names_are_one_inode(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"x")

    def fill(fd: int, tmp: str) -> None:  # a fill that makes the temp name another link to ``path``
        os.close(fd)
        os.unlink(tmp)
        os.link(path, tmp)

    files._swap_in(path, fill)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"] and path.read_bytes() == b"x"


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_a_full_disk_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "write":
        real = os.fdopen

        class Full:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real(fd, mode)))
    else:
        monkeypatch.setattr(os, where, full)
    with pytest.raises(CheckpointError, match=r"No space left on device \(ENOSPC\); the previous version"):
        files.atomic_write_bytes(path, b"new" * 1000)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"] and path.read_bytes() == b"old"


def test_the_sweep_removes_only_medkit_leftovers_inside_the_run(tmp_path: Path) -> None:
    from medkit.storage.leftovers import sweep_leftovers

    run, outside = tmp_path / "run", tmp_path / "elsewhere"
    (run / "metrics").mkdir(parents=True)
    (run / "generations" / ".staging-abc12345").mkdir(parents=True)
    (run / "generations" / ".staging-abc12345" / "model.safetensors").write_bytes(b"half")
    (run / "generations" / "g-00000001").mkdir()
    (run / "generations" / "g-00000001" / "model.safetensors").write_bytes(b"kept")
    (run / ".best.safetensors.k2j4h6g8.tmp").write_bytes(b"copy")
    (run / "metrics" / ".steps.jsonl.a_b_c_d_.tmp").write_bytes(b"{")
    (run / "notes.tmp").write_bytes(b"mine")  # not medkit's temp pattern
    (run / ".x.tmp").write_bytes(b"mine")
    outside.mkdir()
    (outside / ".best.safetensors.k2j4h6g8.tmp").write_bytes(b"not the run's")
    (outside / ".staging-abc12345").mkdir()
    (run / "linked").symlink_to(outside)  # a link to a folder is never walked into
    (run / ".model.safetensors.zzzzzzzz.tmp").symlink_to(outside / ".best.safetensors.k2j4h6g8.tmp")
    (run / ".current.new").symlink_to("generations/g-00000001")
    (run / "metrics" / "deeper").mkdir()
    (run / "metrics" / "deeper" / ".other.a1b2c3d4.tmp").write_bytes(b"not in a place medkit writes")
    removed = sweep_leftovers(run, folders=(r"generations/\.staging-[^/]+",), links=(r"\.current\.new",),
                              places=("", "generations", "metrics", "linked"))
    assert sorted(removed) == [".best.safetensors.k2j4h6g8.tmp", ".current.new", "generations/.staging-abc12345",
                               "metrics/.steps.jsonl.a_b_c_d_.tmp"]
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == [
        ".model.safetensors.zzzzzzzz.tmp", ".x.tmp", "generations", "generations/g-00000001",
        "generations/g-00000001/model.safetensors", "linked", "metrics", "metrics/deeper",
        "metrics/deeper/.other.a1b2c3d4.tmp", "notes.tmp"]
    assert sorted(p.name for p in outside.iterdir()) == [".best.safetensors.k2j4h6g8.tmp", ".staging-abc12345"]
