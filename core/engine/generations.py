"""The commit protocol of a run directory: every checkpoint is one complete, immutable generation.

A run directory's durable state lives in ``generations/g-<n>/`` (weights, ``config.json``,
``manifest.json``, ``checkpoint/`` with optimizer/RNG/strategy/trainer state, ``strategy/`` with the
last stage-boundary strategy state, ``metrics/`` with the step log up to that step, matrices and
``eval.json``). A generation is written into a staging folder, made durable (fsync of every file and
folder), renamed into place, and then committed by one atomic ``rename`` of the ``current`` symlink.
The paths readers use (``model.safetensors``, ``manifest.json``, ``metrics/``…) are fixed symlinks
through ``current``, so a reader always sees one generation whole. A SIGKILL at any instant leaves
either the old or the new generation current; ``--resume`` continues from whichever it is. The last
``keep`` generations stay on disk so a newest one that became unreadable falls back to the one
before. A generation is identified by its own ``generation.json`` (its number and the run's id),
never by a folder's name or by where ``current`` points, and ``--resume`` refuses a ``current`` it
cannot prove to be this run's without changing anything (:mod:`medkit.engine.identity`).
Hand-written because no library offers a crash-consistent multi-file commit (docs/checkpoints.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from medkit.api.errors import CheckpointError
from medkit.engine.identity import (CURRENT, GEN_META, GENERATIONS, NAME, RUN_META, generation_folders,
                                    read_identity, read_run_id, survey)
from medkit.storage.jsonl import complete_lines
from medkit.storage.leftovers import sweep_leftovers

log = logging.getLogger(__name__)
#: Top-level names that are symlinks into the current generation.
LINKED = ("model.safetensors", "config.json", "manifest.json", "checkpoint", "strategy", "metrics")
_NAME = NAME
STEPS_LOG = "metrics/steps.jsonl"


def _fsync(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the data files are synced
        pass
    finally:
        os.close(fd)


def _disk_error(path: Path, exc: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write {path}: {exc.strerror or exc}; the previous checkpoint of the run "
                           f"is intact (free space or fix permissions, then medkit run --resume)")


class Generation:
    """A staging folder being filled with the files of one generation (plain durable writes: the
    folder becomes visible only as a whole, so its files need no rename of their own)."""

    def __init__(self, path: Path, number: int, previous: Path | None) -> None:
        self.path, self.number, self.previous = path, number, previous

    def write_bytes(self, rel: str, data: bytes) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(target, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _disk_error(target, exc) from exc
        return target

    def write_json(self, rel: str, obj: Any) -> Path:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"
        return self.write_bytes(rel, text.encode("utf-8"))

    def write_tensors(self, rel: str, tensors: Mapping[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> Path:
        from safetensors.torch import save

        flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        return self.write_bytes(rel, save(flat, metadata=metadata))

    def extend_lines(self, rel: str, records: Iterable[dict[str, Any]]) -> Path | None:
        """``rel`` = the previous generation's ``rel`` (its complete lines: see
        :func:`medkit.storage.jsonl.complete_lines`) plus one JSON line per record."""
        old = self.previous / rel if self.previous is not None else None
        rows = list(records)
        head = old.read_bytes() if old is not None and old.is_file() else b""
        if head:  # a torn tail is cut (never glued onto), a row logged twice is not repeated
            head = complete_lines(old, head, before=rows[0] if rows else None)  # type: ignore[arg-type]
        body = "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows).encode("utf-8")
        if not head and not body:
            return None
        return self.write_bytes(rel, head + body)

    def carry(self, rel: str) -> bool:
        """Reuse the previous generation's ``rel`` (a file or folder) unchanged, by hard links where
        the file system has them (generations are immutable, so sharing inodes is safe)."""
        if self.previous is None or not (self.previous / rel).exists():
            return False
        src, dst = self.previous / rel, self.path / rel
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        for f in files:
            target = dst / f.relative_to(src) if src.is_dir() else dst
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)
        return True


#: Top-level names that are symlinks into the current generation when it holds them (a run with no
#: tokenizer assets has none; a run directory written before generations held them keeps its own
#: ``tokenizers/`` folder, which is left as it is).
LINKED_IF_PRESENT = ("tokenizers",)


class GenerationStore:
    """Generations of one run directory (see the module docstring)."""

    def __init__(self, run_dir: Path, keep: int = 2) -> None:
        if keep < 1:
            raise CheckpointError(f"trainer.keep_checkpoints must be >= 1, got {keep}")
        self.run_dir, self.keep = Path(run_dir), int(keep)
        self.root = self.run_dir / GENERATIONS

    # -- reading -------------------------------------------------------------------------------
    def numbers(self) -> list[int]:
        """The numbers of the ``g-<n>`` folders by name (what a new generation's name must avoid)."""
        return sorted(int(m.group(1)) for p in generation_folders(self.root) if (m := _NAME.match(p.name)))

    def path_of(self, number: int) -> Path:
        return self.root / f"g-{number:08d}"

    def run_id(self) -> str | None:
        """This run's id (``generations/run.json``), ``None`` before the first generation."""
        return read_run_id(self.root)

    def current(self) -> Path | None:
        """The committed generation, or ``None`` before the first commit."""
        link = self.run_dir / CURRENT
        if not link.is_symlink():
            return None
        target = (self.run_dir / os.readlink(link)).resolve()
        return target if target.is_dir() else None

    def _ours(self) -> dict[int, Path]:
        """This run's generations by the number each says it has (never by its folder's name)."""
        run = self.run_id()
        out: dict[int, Path] = {}
        for p in generation_folders(self.root):
            ident = read_identity(p)
            if ident is not None and ident.run == run:
                out.setdefault(ident.number, p)
        return out

    @staticmethod
    def readable(gen: Path) -> str | None:
        """Why ``gen`` cannot be resumed from, or ``None`` when its state files parse."""
        try:
            json.loads((gen / "checkpoint" / "trainer.json").read_text(encoding="utf-8"))
            json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
            for name in ("model.safetensors", "checkpoint/rng.safetensors"):
                with open(gen / name, "rb") as fh:
                    size = int.from_bytes(fh.read(8), "little")
                    if size <= 0 or size > 100 << 20:
                        return f"{name} has a bad header"
                    json.loads(fh.read(size))
        except (OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    @staticmethod
    def check_log(gen: Path) -> None:
        """Check ``gen``'s step log: a torn tail is a warning naming its step (the next generation
        holds the log without it); a bad line before it is a :class:`CheckpointError`."""
        log_file = gen / STEPS_LOG
        if log_file.is_file():
            complete_lines(log_file, log_file.read_bytes())

    def sweep(self) -> list[str]:
        """Remove what interrupted writes left (temp files, staging and half-deleted generations,
        half-made links); only medkit's own names, only inside the run directory."""
        return sweep_leftovers(
            self.run_dir, folders=(rf"{GENERATIONS}/\.staging-[^/]+", rf"{GENERATIONS}/\.deleting-[^/]+"),
            links=(rf"\.{CURRENT}\.new", *(rf"\.{re.escape(name)}\.link" for name in LINKED)),
            places=("", GENERATIONS))

    def recover(self) -> Path | None:
        """Clean what a crash left (staging folders, uncommitted generations) and return the newest
        readable committed generation, re-pointing ``current`` to an older one if the newest is
        unreadable. ``None`` when nothing was ever committed.

        Raises:
            CheckpointError: ``current`` is not a generation of this run inside the run directory,
                two generations claim one number, or the step log is corrupted before its end
                (:func:`medkit.engine.identity.survey`); nothing on disk is changed then.
        """
        link = self.run_dir / CURRENT
        if not link.is_symlink() and not os.path.lexists(link):
            return None
        found = survey(self.run_dir)  # reads only; a refusal changes nothing
        self.check_log(found.current)
        self.sweep()
        for n, p in sorted(found.ours.items()):
            if n > found.number:
                if found.run is None:  # a legacy run: a name proves nothing, so it stays
                    log.warning("%s: kept %s, numbered after the committed generation but not provably this "
                                "run's", self.run_dir, p.name)
                else:  # this run's, written after the commit point: the crash came before its commit
                    self._delete(p)
        for p in found.others:
            log.warning("%s: kept %s/%s, which is not a generation of this run (remove it by hand if it is not "
                        "needed)", self.run_dir, GENERATIONS, p.name)
        for n in sorted((n for n in found.ours if n <= found.number), reverse=True):
            path = found.ours[n]
            why = self.readable(path)
            if why is None:
                if path != found.current:
                    log.warning("%s: generation %d is unreadable; falling back to generation %d",
                                self.run_dir, found.number, n)
                    self._point(path)
                    self.check_log(path)
                self._link_top_level()
                return path
            log.warning("%s: generation %d cannot be resumed from (%s); kept aside as %s", self.run_dir, n, why,
                        f".corrupt-{path.name}")
            os.rename(path, self.root / f".corrupt-{path.name}")
        raise CheckpointError(f"{self.run_dir}: no readable checkpoint generation is left under {self.root}; "
                              f"start the run again in a new --run-dir")

    # -- writing -------------------------------------------------------------------------------
    def _ensure_run_id(self) -> str:
        """This run's id, created (``generations/run.json``) before its first generation."""
        from medkit.storage.files import atomic_write_json

        run = self.run_id()
        if run is None:
            run = uuid.uuid4().hex
            atomic_write_json(self.root / RUN_META, {
                "run": run, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        return run

    def begin(self) -> Generation:
        self.root.mkdir(parents=True, exist_ok=True)
        self._ensure_run_id()
        taken = set(self.numbers()) | set(self._ours())  # a new number clashes with no name and no identity
        path = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        return Generation(path, max(taken, default=0) + 1, self.current())

    def abandon(self, gen: Generation) -> None:
        """Remove an uncommitted generation after a failure (its staging folder or its renamed folder,
        unless ``current`` already names it), so a failed checkpoint leaves no copy of the weights."""
        final = self.path_of(gen.number)
        if gen.path.is_dir() and not gen.path.is_symlink():
            shutil.rmtree(gen.path, ignore_errors=True)
        ident = read_identity(final)
        if ident is not None and ident.number == gen.number and ident.run == self.run_id() \
                and self.current() != final.resolve() and not final.is_symlink():
            shutil.rmtree(final, ignore_errors=True)  # renamed into place but never committed
        new = self.run_dir / f".{CURRENT}.new"
        if new.is_symlink():
            new.unlink()

    def commit(self, gen: Generation) -> Path:
        """Make ``gen`` durable and current (the single commit point is the ``current`` rename)."""
        final = self.path_of(gen.number)
        try:
            gen.write_json(GEN_META, {"generation": gen.number, "run": self._ensure_run_id()})
            for folder in sorted({p.parent for p in gen.path.rglob("*")} | {gen.path}, key=lambda p: -len(p.parts)):
                _fsync(folder)
            os.rename(gen.path, final)
            _fsync(self.root)
            self._point(final)
        except OSError as exc:
            self.abandon(gen)
            raise _disk_error(final, exc) from exc
        except BaseException:
            self.abandon(gen)
            raise
        self._link_top_level()
        self._prune(gen.number, final)
        return final

    def _prune(self, number: int, newest: Path) -> None:
        """Delete this run's generations older than the newest ``keep``, once the newest is verified
        readable and this run's (otherwise nothing is deleted)."""
        ident, why = read_identity(newest), self.readable(newest)
        if why is not None or ident is None or ident.run != self.run_id() or ident.number != number:
            log.warning("%s: the new generation %s does not read back (%s); no older generation is deleted",
                        self.run_dir, newest.name, why or "its generation.json does not match")
            return
        ours = self._ours()
        for n in sorted(ours)[:-self.keep]:
            if n < number:
                self._delete(ours[n])

    def _delete(self, gen: Path) -> None:
        """Delete a generation folder of this run: renamed to ``.deleting-<name>`` first (one atomic
        step, so a half-deleted folder is never taken for a generation), then removed."""
        if gen.parent != self.root or gen.is_symlink() or not gen.is_dir():
            raise CheckpointError(f"refusing to delete {gen}: not a generation folder inside {self.root}")
        doomed = self.root / f".deleting-{gen.name}"
        os.rename(gen, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def _point(self, gen: Path) -> None:
        tmp = self.run_dir / f".{CURRENT}.new"
        if tmp.is_symlink() or tmp.exists():
            os.unlink(tmp)
        os.symlink(f"{GENERATIONS}/{gen.name}", tmp)
        os.rename(tmp, self.run_dir / CURRENT)
        _fsync(self.run_dir)

    def _link_top_level(self) -> None:
        """The fixed top-level symlinks through ``current`` (created once; idempotent)."""
        current = self.current()
        present = [n for n in LINKED_IF_PRESENT if current is not None and (current / n).exists()
                   and ((self.run_dir / n).is_symlink() or not (self.run_dir / n).exists())]
        for name in (*LINKED, *present):
            link = self.run_dir / name
            want = f"{CURRENT}/{name}"
            if link.is_symlink() and os.readlink(link) == want:
                continue
            if link.exists() and not link.is_symlink():
                raise CheckpointError(f"{link} is a regular file or folder, not medkit's link into "
                                      f"{CURRENT}/; this run directory was modified by hand")
            tmp = self.run_dir / f".{name}.link"
            if tmp.is_symlink() or tmp.exists():
                os.unlink(tmp)
            os.symlink(want, tmp)
            os.rename(tmp, link)
        _fsync(self.run_dir)
