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
before. Hand-written because no library offers a crash-consistent multi-file commit (docs/checkpoints.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from medkit.api.errors import CheckpointError

log = logging.getLogger(__name__)
GENERATIONS = "generations"
CURRENT = "current"
#: Top-level names that are symlinks into the current generation.
LINKED = ("model.safetensors", "config.json", "manifest.json", "checkpoint", "strategy", "metrics")
_NAME = re.compile(r"^g-(\d{8})$")


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
        """``rel`` = the previous generation's ``rel`` plus one JSON line per record."""
        old = self.previous / rel if self.previous is not None else None
        head = old.read_bytes() if old is not None and old.is_file() else b""
        body = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records).encode("utf-8")
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
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir())

    def path_of(self, number: int) -> Path:
        return self.root / f"g-{number:08d}"

    def current(self) -> Path | None:
        """The committed generation, or ``None`` before the first commit."""
        link = self.run_dir / CURRENT
        if not link.is_symlink():
            return None
        target = (self.run_dir / os.readlink(link)).resolve()
        return target if target.is_dir() else None

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

    def recover(self) -> Path | None:
        """Clean what a crash left (staging folders, uncommitted generations) and return the newest
        readable committed generation, re-pointing ``current`` to an older one if the newest is
        unreadable. ``None`` when nothing was ever committed."""
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(".staging-"):
                    shutil.rmtree(p, ignore_errors=True)
        current = self.current()
        if current is None:
            return None
        number = int(_NAME.match(current.name).group(1))  # type: ignore[union-attr]
        for n in self.numbers():
            if n > number:  # written but never committed: the crash came before the commit
                shutil.rmtree(self.path_of(n), ignore_errors=True)
        for n in reversed([n for n in self.numbers() if n <= number]):
            why = self.readable(self.path_of(n))
            if why is None:
                if n != number:
                    log.warning("%s: generation %d is unreadable; falling back to generation %d",
                                self.run_dir, number, n)
                    self._point(n)
                self._link_top_level()
                return self.path_of(n)
            log.warning("%s: generation %d cannot be resumed from (%s); kept aside as %s", self.run_dir, n, why,
                        f".corrupt-g-{n:08d}")
            os.rename(self.path_of(n), self.root / f".corrupt-g-{n:08d}")
        raise CheckpointError(f"{self.run_dir}: no readable checkpoint generation is left under {self.root}; "
                              f"start the run again in a new --run-dir")

    # -- writing -------------------------------------------------------------------------------
    def begin(self) -> Generation:
        self.root.mkdir(parents=True, exist_ok=True)
        numbers = self.numbers()
        path = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        return Generation(path, (numbers[-1] + 1) if numbers else 1, self.current())

    def commit(self, gen: Generation) -> Path:
        """Make ``gen`` durable and current (the single commit point is the ``current`` rename)."""
        final = self.path_of(gen.number)
        try:
            for folder in sorted({p.parent for p in gen.path.rglob("*")} | {gen.path}, key=lambda p: -len(p.parts)):
                _fsync(folder)
            os.rename(gen.path, final)
            _fsync(self.root)
            self._point(gen.number)
        except OSError as exc:
            raise _disk_error(final, exc) from exc
        self._link_top_level()
        for n in self.numbers()[:-self.keep]:
            shutil.rmtree(self.path_of(n), ignore_errors=True)
        return final

    def _point(self, number: int) -> None:
        tmp = self.run_dir / f".{CURRENT}.new"
        if tmp.is_symlink() or tmp.exists():
            os.unlink(tmp)
        os.symlink(f"{GENERATIONS}/g-{number:08d}", tmp)
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
