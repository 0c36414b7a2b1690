"""The one folder walker: sorted files under a root, hidden entries skipped, relative ids, skip/raise."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from medkit.api.errors import ConfigError, DataError

log = logging.getLogger(__name__)
T = TypeVar("T")
ON_ERROR = ("raise", "skip")


def has_suffix(path: Path | str, suffixes: Sequence[str]) -> bool:
    """Whether the file name ends with one of ``suffixes`` (case-insensitive; ``.nii.gz`` works)."""
    name = str(path).lower()
    return any(name.endswith(s.lower()) for s in suffixes)


def relative_id(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` in posix form (the sample id), or ``path`` itself outside it."""
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        try:
            return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            return Path(path).as_posix()


def not_regular(path: Path) -> str | None:
    """Why ``path`` (not a folder) cannot be read as a data file, or ``None`` for a regular file."""
    import stat

    try:
        mode = path.stat().st_mode  # follows links
    except FileNotFoundError:
        return f"a dangling symbolic link (to {os.readlink(path)})" if path.is_symlink() else "vanished while listed"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{kind}, not a regular file"


def walk(root: Path, suffixes: Sequence[str] | None = None, *, exclude: Sequence[str] = (),
         recursive: bool = True, skipped: list[tuple[str, str]] | None = None) -> tuple[Path, list[Path]]:
    """The base folder of ``root`` and every regular file under it, sorted by relative path.

    ``root`` may be one file (then the base is its folder and the list is that file). Hidden files
    and anything under a hidden folder are skipped; with ``suffixes`` only files ending in one of
    them are kept; ``exclude`` lists relative paths to leave out (such as ``labels.csv``);
    ``recursive=False`` lists only the files directly in ``root``. Entries that are neither files nor
    folders (a FIFO, a socket, a device, a dangling symbolic link) are never read: each is logged as
    skipped with its reason and recorded in ``skipped`` as ``(relative path, reason)``.

    Raises:
        DataError: when ``root`` does not exist.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder; pass --data an existing folder or file")
    if root.is_file():
        return root.parent, [root]
    skip = set(exclude)
    out = []
    for p in (root.rglob("*") if recursive else root.iterdir()):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or rel.as_posix() in skip:
            continue
        if suffixes is not None and not has_suffix(p, suffixes):
            continue
        if not p.is_file():
            why = not_regular(p)
            if why is not None:
                log.warning("skipping %s: %s", p, why)
                if skipped is not None:
                    skipped.append((rel.as_posix(), why))
            continue
        out.append(p)
    return root, sorted(out, key=lambda p: p.relative_to(root).as_posix())


def check_on_error(value: str, owner: str) -> str:
    """``value`` when it is ``raise`` or ``skip``, else a :class:`ConfigError` naming ``owner``."""
    if value not in ON_ERROR:
        raise ConfigError(f"{owner}: on_error must be 'raise' or 'skip', got {value!r}")
    return value


class OnError:
    """What to do with a bad file or row: ``raise`` its :class:`DataError`, or ``skip`` it (logged and
    recorded in :attr:`skipped` as ``(file or row, reason)``).

    Args:
        on_error: ``"raise"`` or ``"skip"``.
        owner: who reads the data, for messages (``"modality xray"``, ``"task classification"``).
        fix: the hint added to errors raised by :meth:`bad`.
        skipped: the list to record skipped entries in (default: a new one).
    """

    def __init__(self, on_error: str, owner: str, fix: str = "",
                 skipped: list[tuple[str, str]] | None = None) -> None:
        self.on_error = check_on_error(on_error, owner)
        self.owner, self.fix = owner, fix
        self.skipped: list[tuple[str, str]] = [] if skipped is None else skipped

    def run(self, where: str, fn: Callable[..., T], *args: object) -> T | None:
        """``fn(*args)``; a :class:`DataError` is raised again or, with ``skip``, recorded (``None``)."""
        try:
            return fn(*args)
        except DataError as exc:
            if self.on_error == "raise":
                raise
            self._record(where, str(exc))
            return None

    def bad(self, where: str, reason: str) -> None:
        """Report a problem found by the caller: a :class:`DataError` ``"<where>: <reason>; <fix>"``
        with ``raise``, else a log line and an entry in :attr:`skipped`."""
        if self.on_error == "raise":
            raise DataError(f"{where}: {reason}" + (f"; {self.fix}" if self.fix else ""))
        self._record(where, reason)

    def _record(self, where: str, reason: str) -> None:
        record_skip(self.owner, self.skipped, where, reason)


def record_skip(owner: str, skipped: list[tuple[str, str]], where: str, reason: str) -> None:
    """Log a skipped file or row and add ``(where, reason)`` to ``skipped``: what :class:`OnError`
    does with ``skip``, for skips no ``on_error`` setting can turn into errors."""
    log.warning("%s: skipping %s: %s", owner, where, reason)
    skipped.append((where, reason))
