"""Fault injection at file-system commit points: count every namespace operation a process makes
under a folder (rename, link, symlink, unlink, rmdir, mkdir) and SIGKILL it at the N-th.

Used by the crash-consistency tests (tests/engine/test_crash_points.py), in the spirit of SQLite's
and ALICE's "fail at every file-system operation, not at random". It patches the ``os`` functions
every Python-level caller goes through (``shutil``, ``pathlib``, ``tempfile`` and medkit itself look
them up at call time), so it covers every such call the run makes; the writes themselves are
covered by the operations around them (a kill between two writes of a staging folder is the same
state as a kill before the folder's rename).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, Callable

OPERATIONS = ("rename", "replace", "link", "symlink", "unlink", "remove", "rmdir", "mkdir")


def _resolve(arg: Any, dir_fd: int | None) -> str | None:
    if isinstance(arg, int):
        return None
    path = os.fsdecode(arg) if isinstance(arg, (str, bytes, os.PathLike)) else None
    if path is None:
        return None
    if dir_fd is not None and not os.path.isabs(path):
        try:
            base = os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:
            return None
        path = os.path.join(base, path)
    return os.path.abspath(path)


class CommitPoints:
    """Counts (and optionally kills at) namespace operations under ``root``.

    Args:
        root: only operations on paths inside this folder count.
        kill_at: SIGKILL the process just before the ``kill_at``-th operation (1-based); ``None``
            only counts.
        log_file: where :meth:`install` appends one JSON line per counted operation (so a parent
            process can read the count of a child that was killed or exited).
    """

    def __init__(self, root: Path, kill_at: int | None = None, log_file: Path | None = None) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.kill_at, self.log_file = kill_at, log_file
        self.count = 0
        self._saved: dict[str, Callable[..., Any]] = {}

    def _inside(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        dir_fds = [kwargs.get("dir_fd"), kwargs.get("src_dir_fd"), kwargs.get("dst_dir_fd")]
        for arg in args[:2]:
            for fd in dir_fds:
                path = _resolve(arg, fd)
                if path is not None and (path == self.root or path.startswith(self.root + os.sep)):
                    return path
        return None

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def op(*args: Any, **kwargs: Any) -> Any:
            path = self._inside(args, kwargs)
            if path is not None:
                self.count += 1
                if self.log_file is not None:
                    with open(self.log_file, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps({"n": self.count, "op": name, "path": path}) + "\n")
                if self.kill_at is not None and self.count == self.kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return op

    def install(self) -> CommitPoints:
        for name in OPERATIONS:
            real = getattr(os, name)
            self._saved[name] = real
            setattr(os, name, self._wrap(name, real))
        return self

    def uninstall(self) -> None:
        for name, real in self._saved.items():
            setattr(os, name, real)
        self._saved = {}
