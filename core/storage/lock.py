"""One writer per run directory: an OS-level lock (``flock``) on ``RUN/.medkit.lock``.

The kernel drops a ``flock`` when its holder dies (even by SIGKILL), so a stale lock never needs
breaking by hand: the next process simply gets it. The JSON body ``{pid, host, started, command}`` is
only informative — it names the holder in the refusal message. The lock file is never deleted (deleting
it would let two processes lock two different inodes); after locking, the holder checks that the path
still names the inode it locked and retries otherwise, so the takeover is race-free.

``flock`` is advisory and per open file description: it is inherited by forked children (a DataLoader
worker keeps it until it exits) and, on NFS, Linux maps it onto POSIX byte-range locks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from medkit.api.errors import CheckpointError

log = logging.getLogger(__name__)

LOCK_FILE = ".medkit.lock"

_held: dict[str, tuple[int, int]] = {}  # realpath of the run dir → (fd, depth) held by this process
_guard = threading.Lock()


class RunLockedError(CheckpointError):
    """Another live process holds the run directory's lock."""


def _describe(body: str) -> str:
    try:
        info = json.loads(body)
        pid, host = int(info["pid"]), str(info["host"])
    except (ValueError, KeyError, TypeError):
        return "another process (it has not recorded its PID yet)"
    what = f" (medkit {info['command']}" + (f", since {info['started']})" if info.get("started") else ")") \
        if info.get("command") else ""
    return f"PID {pid} on host {host}{what}"


def read_lock(run_dir: Path) -> dict | None:
    """The body the last holder wrote into ``run_dir``'s lock file, or ``None``."""
    try:
        return json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


def _holder_body(fd: int, wait_s: float = 1.0) -> str:
    """The holder's body; it writes it just after locking, so a process refused at that very instant
    waits for it briefly."""
    deadline = time.monotonic() + wait_s
    while True:
        body = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        try:
            json.loads(body)
            return body
        except ValueError:
            if time.monotonic() >= deadline:
                return body
            time.sleep(0.02)


_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def _open(path: Path, read_only: bool) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if not (read_only and exc.errno in _READ_ONLY):
            raise CheckpointError(f"cannot lock {path.parent}: {path}: {os.strerror(exc.errno or 0)}; check "
                                  f"that the directory is writable") from exc
    try:  # a reader of a directory it cannot write: lock the file if there is one, else go unlocked
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        log.debug("%s is not writable and holds no lock file: reading it unlocked", path.parent)
        return None


def _acquire(run_dir: Path, command: str, read_only: bool = False) -> int | None:
    path = run_dir / LOCK_FILE
    for _ in range(10):
        fd = _open(path, read_only)
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            body = _holder_body(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(f"{run_dir} is in use by {_describe(body)}; wait for it to finish or "
                                     f"stop it, then try again (one writer per run directory)") from None
            raise CheckpointError(f"cannot lock {path}: {os.strerror(exc.errno or 0)}") from exc
        try:  # the path may have been replaced between open and flock: lock what it names now
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        if previous.strip():  # a holder that exits cleanly clears the body: this one died
            log.info("%s: taking over the lock left by %s (no longer running)", run_dir, _describe(previous))
        body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, body.encode("utf-8"), 0)
        except OSError:  # informative only (a full disk must not stop the lock itself)
            pass
        return fd
    raise CheckpointError(f"cannot lock {path}: it keeps being replaced by another process")


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str], command: str, *, read_only: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if needed) for the ``with`` block.

    Re-entrant within one process (a nested ``run_lock`` on the same directory is a no-op). A second
    process gets a :class:`RunLockedError` naming the holder's PID and host, and nothing in the run
    directory is created or changed by it.

    Args:
        run_dir: the run directory.
        command: what holds it (``"run"``, ``"finetune"``, ``"push"``...), recorded in the lock file.
        read_only: the holder only reads the run (``push``): a directory it may not write (read-only
            file system, someone else's run) is still locked if it has a lock file, else read unlocked.
    """
    run_dir = Path(run_dir)
    try:
        if not run_dir.is_dir():
            run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the run directory {run_dir}: {os.strerror(exc.errno or 0)}"
                              ) from exc
    key = os.path.realpath(run_dir)
    with _guard:
        if key in _held:
            held_fd, depth = _held[key]
            _held[key] = (held_fd, depth + 1)
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield run_dir
        finally:
            with _guard:
                if key in _held:
                    held_fd, depth = _held[key]
                    _held[key] = (held_fd, depth - 1)
        return
    fd = _acquire(run_dir, command, read_only)
    if fd is None:
        yield run_dir
        return
    with _guard:
        _held[key] = (fd, 1)
    try:
        yield run_dir
    finally:
        with _guard:
            _held.pop(key, None)
        try:
            os.ftruncate(fd, 0)  # the file stays (see the module docstring); its body is cleared
        except OSError:
            pass
        os.close(fd)  # releases the flock


def holds_lock(run_dir: str | os.PathLike[str]) -> bool:
    """Whether this process holds ``run_dir``'s lock."""
    return os.path.realpath(run_dir) in _held
