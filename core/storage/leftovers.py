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


def sweep_leftovers(root: Path, folders: Iterable[str] = (), links: Iterable[str] = ()) -> list[str]:
    """Remove medkit's stale temp files and staging folders under ``root``.

    Args:
        root: the run directory.
        folders: regular expressions matched against a folder's path relative to ``root`` (POSIX
            separators), e.g. ``r"generations/\\.staging-[^/]+"``; a real folder (not a link) that
            matches is removed with its contents.
        links: the same for symbolic links that medkit creates only to rename them at once
            (``.current.new``); the link itself is removed, never its target.

    Returns:
        The removed paths relative to ``root``, in the order removed (each also logged at INFO).
    """
    root = Path(root)
    folder_res = [re.compile(f"^(?:{p})$") for p in folders]
    link_res = [re.compile(f"^(?:{p})$") for p in links]
    removed: list[str] = []
    if not root.is_dir() or root.is_symlink():
        return removed
    for here, dirs, names in os.walk(root, followlinks=False):
        rel_dir = Path(here).relative_to(root)
        for d in list(dirs):
            rel = (rel_dir / d).as_posix()
            path = Path(here) / d
            if path.is_symlink():
                dirs.remove(d)  # os.walk lists links to folders as folders; never descend into one
                if any(r.match(rel) for r in link_res):
                    path.unlink()
                    removed.append(rel)
            elif any(r.match(rel) for r in folder_res):
                dirs.remove(d)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(rel)
        for n in names:
            rel = (rel_dir / n).as_posix()
            path = Path(here) / n
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                if any(r.match(rel) for r in link_res):
                    path.unlink()
                    removed.append(rel)
            elif stat.S_ISREG(mode) and TEMP_FILE.match(n):
                path.unlink()
                removed.append(rel)
    for rel in removed:
        log.info("%s: removed %s, left by an interrupted write", root, rel)
    return removed
