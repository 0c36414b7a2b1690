"""Sweep what interrupted writes left in a run directory: medkit's own temp files and staging folders.

A process killed in the middle of an atomic write (:mod:`medkit.storage.files`) or of a checkpoint
leaves its temp file or staging folder behind; nothing reads them, but they can hold a full-size
copy of the weights. The sweep runs at the start of a run, a resume and a fine-tune, under the run
directory's lock (so no other writer can own them), and removes only names that medkit itself
creates, only inside the run directory: symbolic links are never followed, and a leftover that is a
link is removed as a link, never through it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: ``tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp")`` of :func:`medkit.storage.files._temp_beside`
#: (``mkstemp``'s random part is 8 characters of ``[a-z0-9_]``).
TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def sweep_leftovers(root: Path, folders: Iterable[str] = (), links: Iterable[str] = (),
                    places: Iterable[str] = ("",)) -> list[str]:
    """Remove medkit's stale temp files and staging folders in the given folders of ``root``.

    Args:
        root: the run directory.
        folders: regular expressions matched against a folder's path relative to ``root`` (POSIX
            separators), e.g. ``r"generations/\\.staging-[^/]+"``; a real folder (not a link) that
            matches is removed with its contents.
        links: the same for symbolic links that medkit creates only to rename them at once
            (``.current.new``); the link itself is removed, never its target.
        places: the folders (relative to ``root``, ``""`` for ``root`` itself) whose entries are
            looked at — not recursively, so a run directory placed in a big folder costs nothing and
            nothing of the user's deeper down is touched. A place that is a link is skipped.

    Returns:
        The removed paths relative to ``root``, in the order removed (each also logged at INFO).
    """
    root = Path(root)
    folder_res = [re.compile(f"^(?:{p})$") for p in folders]
    link_res = [re.compile(f"^(?:{p})$") for p in links]
    removed: list[str] = []
    if not root.is_dir() or root.is_symlink():
        return removed
    for place in dict.fromkeys(places):
        here = root / place if place else root
        if not place_ok(root, here):
            continue
        for path in sorted(here.iterdir()):
            rel = path.relative_to(root).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                if any(r.match(rel) for r in link_res):
                    path.unlink()
                    removed.append(rel)
            elif stat.S_ISDIR(mode):
                if any(r.match(rel) for r in folder_res):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(rel)
            elif stat.S_ISREG(mode) and TEMP_FILE.match(path.name):
                path.unlink()
                removed.append(rel)
    for rel in removed:
        log.info("%s: removed %s, left by an interrupted write", root, rel)
    return removed


def place_ok(root: Path, here: Path) -> bool:
    """Whether ``here`` is a real folder inside ``root`` reached through no symbolic link."""
    try:
        rel = here.relative_to(root)
    except ValueError:
        return False
    walk = root
    for part in rel.parts:
        walk = walk / part
        if walk.is_symlink():
            return False
    return here.is_dir()
