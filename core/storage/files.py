"""Atomic, pickle-free persistence: safetensors for tensors, JSON for everything else."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch

from medkit.api.errors import CheckpointError
from medkit.storage.tensors import (MAX_HEADER_BYTES, check_finite, check_tensors_file, load_tensors,
                                    open_weights, scan_tensors_file)

__all__ = ["MAX_HEADER_BYTES", "check_finite", "check_tensors_file", "load_tensors", "open_weights",
           "scan_tensors_file"]  # re-exported: the inert reading of weight files lives in tensors.py


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(path: Path, exc: OSError, *, existed: bool | None = None,
                kept: str | None = None) -> CheckpointError:
    """A :class:`CheckpointError` for a failed write of ``path``: the path, the errno text, what was kept
    (the write goes through a temp file, so a previous version is intact) and the fix."""
    path = Path(path)
    if existed is None:
        existed = path.exists()
    code = exc.errno or 0
    name = errno.errorcode.get(code, "")
    text = os.strerror(code) if code else str(exc)
    if kept is None:
        kept = f"the previous version of {path.name} is intact" if existed else f"no {path.name} was written"
    if code in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free space (or raise the quota) on the file system of {path.parent}, then resume"
    elif code in (errno.EACCES, errno.EPERM):
        fix = f"check the permissions of {path.parent}"
    elif code == errno.EROFS:
        fix = "that file system is read-only; choose a writable directory"
    else:
        fix = "check the disk and the directory"
    return CheckpointError(f"cannot write {path}: {text}{f' ({name})' if name else ''}; {kept}; {fix}")


def ordinary_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666`` less the process umask."""
    umask = os.umask(0)  # the only portable way to read the umask is to set it and put it back
    os.umask(umask)
    return 0o666 & ~umask


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temp file beside ``path`` with the permissions of a plain ``open()`` under the umask, not
    ``mkstemp``'s private 0600: every file medkit writes atomically reads like any other file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        os.fchmod(fd, ordinary_file_mode())
    except OSError:  # a file system without POSIX modes: keep what mkstemp gave
        pass
    return fd, tmp


def _same_inode(a: str | Path, b: str | Path) -> bool:
    """Whether the names ``a`` and ``b`` (links not followed) are one file; ``False`` if either is missing."""
    try:
        x, y = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def _replace(tmp: str, path: Path) -> None:
    """``os.replace(tmp, path)``, also when both names are hard links to one inode: POSIX ``rename``
    then does nothing and both names stay, so ``tmp`` is removed (``path`` already names the file)."""
    os.replace(tmp, path)
    if _same_inode(tmp, path):
        os.unlink(tmp)


def _discard(tmp: str) -> None:
    """Remove a temp file on a failure path without hiding the failure itself."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _swap_in(path: Path, fill: Callable[[int, str], None]) -> None:
    """``fill(fd, tmp)`` a temp file beside ``path``, then rename it over ``path`` and fsync the
    folder: readers see the old file or the new one, never a torn one. An ``OSError`` becomes the
    :func:`write_error` that names the path; the temp file never stays behind (on any exception,
    and when the rename had nothing to do because both names were one inode)."""
    path = Path(path)
    existed = path.exists()
    tmp: str | None = None
    try:
        fd, tmp = _temp_beside(path)
        fill(fd, tmp)
        _replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as exc:
        raise write_error(path, exc, existed=existed) from exc
    finally:
        if tmp is not None:
            _discard(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file, fsync and rename (never a torn file).

    Raises:
        CheckpointError: the write failed (full disk, quota, permissions, read-only file system); the
            message names the path and the error, and the previous version of the file is untouched.
    """
    def fill(fd: int, tmp: str) -> None:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    _swap_in(path, fill)


def atomic_link(source: Path, path: Path) -> None:
    """Make ``path`` the same file as ``source`` (a hard link swapped in atomically; a copy where the
    file system has no hard links). Safe because medkit never rewrites a file in place."""
    if _same_inode(source, path):
        return  # already that file (a rename onto its own inode would leave the temp name behind)

    def fill(fd: int, tmp: str) -> None:
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise
            shutil.copy2(source, tmp)

    _swap_in(path, fill)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any, *, allow_nan: bool = True) -> None:
    """``obj`` as indented JSON; ``allow_nan=False`` refuses NaN/inf (strict JSON, ``ValueError``)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=allow_nan) + "\n")


def atomic_write_file(path: Path, write: Callable[[str], None]) -> None:
    """Let ``write(name)`` write ``path``'s content to a temp file beside it (for a library that writes by
    file name and streams, such as safetensors' ``save_file``), then fsync and rename it over ``path``.

    Raises:
        CheckpointError: the write failed (see :func:`atomic_write_bytes`); the temp file is removed.
    """
    def fill(fd: int, tmp: str) -> None:
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())

    _swap_in(path, fill)


def read_json(path: Path) -> Any:
    """Parse a JSON file of a run directory; missing, non-regular (FIFO, device) or invalid is a
    :class:`CheckpointError` naming it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path} is not a regular file (a FIFO, device or directory); replace it by "
                                  f"the JSON file itself")
        data = fh.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the file is corrupted") from exc


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write ``tensors`` as safetensors (contiguous CPU copies; shared storage is fine)."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(Path(path), save(flat, metadata=metadata))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_LEGACY_ONLY = (".pos.spatial.weight", ".pos.temporal.weight", ".type_embed.weight")


def _legacy_hint(missing: list[str], unexpected: list[str]) -> str:
    """A fix for the one mismatch with a known cause: official-layout (legacy) MedCoSS weights
    loaded into a native model, or the reverse."""
    if any(k.endswith(_LEGACY_ONLY) for k in unexpected):
        return ("; these are official MedCoSS (legacy-layout) weights: load them with encoder.legacy=true "
                "(and tokenizer.<name>.legacy=true), or convert them with `medkit convert medcoss --to native`")
    if any(k.endswith(_LEGACY_ONLY) for k in missing):
        return "; the weights have the native layout: set encoder.legacy=false (and tokenizer.<name>.legacy=false)"
    return ""


def load_state_checked(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                       strict: bool = True, finite: bool = True) -> None:
    """Load ``state`` into ``module``, refusing a mismatch with the first offending key and shapes, and
    (``finite``) a tensor holding NaN or Inf, named."""
    own = module.state_dict()
    for key, expected in own.items():  # model order, so "the first mismatch" is stable
        value = state.get(key)
        if value is not None and tuple(expected.shape) != tuple(value.shape):
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)} but the model built "
                                  f"from the config expects {tuple(expected.shape)}; the checkpoint "
                                  f"does not match this architecture")
    if strict:
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        hint = _legacy_hint(missing, unexpected)
        if missing:
            raise CheckpointError(f"{source}: missing key {missing[0]} (and {len(missing) - 1} more); the "
                                  f"checkpoint does not match this architecture{hint}")
        if unexpected:
            raise CheckpointError(f"{source}: unexpected key {unexpected[0]} (and {len(unexpected) - 1} "
                                  f"more); the checkpoint does not match this architecture{hint}")
    if finite:  # in the model's order, so "the first" non-finite tensor is stable
        check_finite({k: state[k] for k in [*own, *state] if k in state}, source=source)
    module.load_state_dict(dict(state), strict=strict)


# -- optimizer and RNG state without pickle -------------------------------------------------
def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and JSON-able metadata."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, _, name = key.partition(".")
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = meta["param_groups"]
    if len(groups) != len(opt.param_groups) or any(
            len(g["params"]) != len(o["params"]) for g, o in zip(groups, opt.param_groups)):
        raise CheckpointError("optimizer state does not match the parameters being trained; was the "
                              "run resumed with a different config?")
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_optimizer(directory: Path, opt: torch.optim.Optimizer) -> None:
    """``optimizer.safetensors`` + ``optimizer.json`` in ``directory``."""
    tensors, meta = optimizer_to_tensors(opt)
    save_tensors(Path(directory) / "optimizer.safetensors", tensors)
    atomic_write_json(Path(directory) / "optimizer.json", meta)


def load_optimizer(directory: Path, opt: torch.optim.Optimizer, device: str | torch.device = "cpu") -> None:
    """Restore what :func:`save_optimizer` wrote into ``opt``."""
    optimizer_from_tensors(opt, load_tensors(Path(directory) / "optimizer.safetensors", device),
                           read_json(Path(directory) / "optimizer.json"))


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Append one JSON line per record and fsync (see :func:`medkit.storage.jsonl.append_jsonl`)."""
    from medkit.storage.jsonl import append_jsonl as append

    append(path, records)


def rng_state() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    if "torch" in tensors:
        torch.set_rng_state(tensors["torch"].to(torch.uint8).cpu())
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"].to(torch.uint8).cpu())


def swap_directory(new: Path, final: Path) -> None:
    """Replace directory ``final`` by ``new`` so that one complete version always exists:
    ``final`` → ``final.old``, ``new`` → ``final``, then ``final.old`` is removed. After a crash that
    left only ``final.old`` (see :func:`recover_directory`), that one is kept until ``new`` is in place."""
    old = final.with_name(final.name + ".old")
    try:
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(new, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        kept = final if final.exists() else old if old.exists() else None
        raise CheckpointError(f"cannot swap in {final}: {os.strerror(exc.errno or 0)}; "
                              + (f"the previous checkpoint is intact in {kept}" if kept else
                                 "there was no previous checkpoint") + "; free space or fix the permissions "
                              f"of {final.parent}, then resume") from exc
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """A fresh directory beside ``final`` to fill; when the block ends normally it replaces
    ``final`` (:func:`swap_directory`), when it raises it is removed and ``final`` is untouched.
    It gets the permissions of a plain ``mkdir`` under the umask, not ``mkdtemp``'s private 0700:
    the result is a run directory like any other."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=str(final.parent)))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        yield staging
        swap_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def recover_directory(final: Path) -> Path | None:
    """The complete checkpoint directory after a crash mid-swap, or ``None`` if there is none."""
    if final.exists():
        return final
    old = final.with_name(final.name + ".old")
    return old if old.exists() else None
