"""Which folders of ``generations/`` belong to a run, by their own committed identity, and the checks
``--resume`` makes (reading only) before it changes anything on disk.

Every generation commits ``generation.json`` (``{"generation": n, "run": id}``) and every run directory
holds ``generations/run.json`` (``{"run": id}``, written once before its first generation). A
generation is identified by those, never by its folder's name or by where ``current`` points: a
``current`` that leads outside the run directory, to a missing folder or to a generation of another
run, and two folders claiming one number, are refused with one line saying what is wrong and how to
fix it, and nothing is changed. A folder that is not provably this run's is never deleted.
Run directories written before identities existed (no ``run.json`` and no ``generation.json``
anywhere) are read by folder name, and nothing above their ``current`` is deleted.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from medkit.api.errors import CheckpointError

GENERATIONS = "generations"
CURRENT = "current"
GEN_META = "generation.json"
RUN_META = "run.json"
NAME = re.compile(r"^g-(\d{8})$")
_UNCHANGED = "nothing was changed"


@dataclass(frozen=True)
class Identity:
    """What a generation says it is: its number and the id of the run that wrote it."""

    number: int
    run: str


def _read_small_json(path: Path) -> object:
    """A small JSON file that must be a regular file (not a link, FIFO or device); ``None`` if it is
    missing, not regular or does not parse."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def read_identity(gen: Path) -> Identity | None:
    """``gen/generation.json`` as an :class:`Identity`, or ``None`` when it is missing or invalid."""
    data = _read_small_json(Path(gen) / GEN_META)
    if not isinstance(data, dict):
        return None
    number, run = data.get("generation"), data.get("run")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1 or not isinstance(run, str) or not run:
        return None
    return Identity(number, run)


def read_run_id(root: Path) -> str | None:
    """The run id of ``root`` (a ``generations/`` folder), or ``None`` when it has none."""
    data = _read_small_json(Path(root) / RUN_META)
    run = data.get("run") if isinstance(data, dict) else None
    return run if isinstance(run, str) and run else None


def generation_folders(root: Path) -> list[Path]:
    """The real folders named ``g-<8 digits>`` directly in ``root`` (symbolic links are not folders
    of the run, whatever they point to), sorted by name."""
    if not root.is_dir() or root.is_symlink():
        return []
    out = []
    for p in root.iterdir():
        if NAME.match(p.name) and stat.S_ISDIR(os.lstat(p).st_mode):
            out.append(p)
    return sorted(out)


@dataclass
class Survey:
    """The generations of a run directory as ``--resume`` found them (nothing changed yet)."""

    current: Path
    number: int
    run: str | None  # None: a run directory written before identities (legacy, read by names)
    ours: dict[int, Path] = field(default_factory=dict)
    others: list[Path] = field(default_factory=list)  # g-* folders not provably this run's: kept


def _fix(run_dir: Path, ours: dict[int, Path]) -> str:
    link = run_dir / CURRENT
    if ours:
        newest = ours[max(ours)].name
        return f"point it at this run's newest generation (`ln -sfn {GENERATIONS}/{newest} {link}`) and resume"
    return "restore the run directory from a copy, or start the run again in a new --run-dir"


def survey(run_dir: Path) -> Survey:
    """Check that ``run_dir/current`` names a generation of this run inside ``run_dir`` and list
    the run's generations by identity. Reads only.

    Raises:
        CheckpointError: one line naming what is wrong and the fix (``current`` not a link, leading
            outside the run directory or to a missing folder, a generation of another run, an
            unidentified generation, a missing ``run.json``, two generations with one number).
    """
    run_dir = Path(run_dir)
    link, root = run_dir / CURRENT, run_dir / GENERATIONS
    if not link.is_symlink():
        raise CheckpointError(f"{link} is not medkit's link to the committed generation (a regular file or "
                              f"folder); remove it and link the newest generation, then resume ({_UNCHANGED})")
    if root.is_symlink() or not root.is_dir():
        raise CheckpointError(f"{root} is {'a symbolic link' if root.is_symlink() else 'missing'}; a run's "
                              f"generations must be a folder inside {run_dir} — restore it, then resume "
                              f"({_UNCHANGED})")
    run = read_run_id(root)
    ours: dict[int, Path] = {}
    others: list[Path] = []
    claimed: dict[int, list[Path]] = {}
    unidentified: list[Path] = []
    for p in generation_folders(root):
        ident = read_identity(p)
        if ident is None:
            unidentified.append(p)
        elif ident.run == run:
            claimed.setdefault(ident.number, []).append(p)
        else:
            others.append(p)
    for number, paths in sorted(claimed.items()):
        ours[number] = paths[0]
    legacy = run is None and not claimed and not others
    if legacy:  # written before identities: the folder names are all there is
        ours = {int(NAME.match(p.name).group(1)): p for p in unidentified}  # type: ignore[union-attr]
    else:
        others += unidentified
    target_text = os.readlink(link)
    target = Path(os.path.realpath(link))
    if target.parent != Path(os.path.realpath(root)):
        where = target_text if target_text == str(target) else f"{target_text}, which is {target}"
        raise CheckpointError(f"{link} points outside this run's {GENERATIONS}/ (to {where}); --resume only "
                              f"continues a generation inside {run_dir}: {_fix(run_dir, ours)} ({_UNCHANGED})")
    if not target.is_dir():
        raise CheckpointError(f"{link} points to {GENERATIONS}/{target.name}, which does not exist; "
                              f"{_fix(run_dir, ours)} ({_UNCHANGED})")
    match = NAME.match(target.name)
    if match is None:
        raise CheckpointError(f"{link} points to {GENERATIONS}/{target.name}, which is not a generation "
                              f"folder; {_fix(run_dir, ours)} ({_UNCHANGED})")
    if legacy:
        return Survey(current=target, number=int(match.group(1)), run=None, ours=ours, others=others)
    ident = read_identity(target)
    if run is None:
        raise CheckpointError(f"{root / RUN_META} is missing, so no generation can be shown to belong to this "
                              f"run; restore it from a copy of the run directory, then resume ({_UNCHANGED})")
    if ident is None:
        raise CheckpointError(f"{link} points to {GENERATIONS}/{target.name}, which has no readable {GEN_META} "
                              f"and so cannot be shown to be a generation of this run; {_fix(run_dir, ours)} "
                              f"({_UNCHANGED})")
    if ident.run != run:
        raise CheckpointError(f"{link} points to {GENERATIONS}/{target.name}, a generation of another run "
                              f"(run {ident.run}; this run is {run}); {_fix(run_dir, ours)} ({_UNCHANGED})")
    for number, paths in sorted(claimed.items()):
        if len(paths) > 1:
            names = " and ".join(f"{GENERATIONS}/{p.name}" for p in paths)
            raise CheckpointError(f"{names} both say they are generation {number} of this run; move the "
                                  f"copy that {CURRENT} does not point to out of {run_dir}, then resume "
                                  f"({_UNCHANGED})")
    return Survey(current=target, number=ident.number, run=run, ours=ours, others=others)
