"""Inert reading of received safetensors files: regular files only, a sane header, finite weights.

A weight file must resolve (symbolic links followed) to a regular file inside its root — its own folder
by default, or the repository folder of a Hugging Face cache snapshot, whose files are links to
``../../blobs/``. A FIFO, a device, a socket or a link leading elsewhere (``/dev/zero``, ``~/.ssh``) is
refused before any byte is read; the 8-byte header length is read first and must fit in the file and in
100 MB; only then is the file read. Weights holding NaN/Inf are refused naming the tensor.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Mapping

import torch

from medkit.api.errors import CheckpointError

#: The largest safetensors header medkit reads (real ones are kilobytes to a few megabytes).
MAX_HEADER_BYTES = 100 * 1024 * 1024


def _default_root(path: Path) -> Path:
    """Where a weight file may live: its own folder, or for a file of a Hugging Face cache snapshot
    (``models--U--N/snapshots/REV/F`` → ``../../blobs/SHA``) the repository's cache folder."""
    parent = path.parent
    if parent.parent.name == "snapshots" and (parent.parent.parent / "blobs").is_dir():
        return parent.parent.parent
    return parent


def open_weights(path: Path, root: Path | None = None) -> tuple[int, int]:
    """Open a received weight file for reading after checking that it is inert.

    The file must resolve (symbolic links followed) to a path inside ``root`` (default: its own folder,
    or the repository folder of a Hugging Face cache snapshot) and be a regular file — not a FIFO,
    device or socket; it is opened non-blocking, so a FIFO cannot hang the check.

    Returns:
        ``(fd, size)``: an open file descriptor (the caller closes it) and the file's size.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise CheckpointError(f"{path} is missing")
    target = Path(os.path.realpath(path))
    base = Path(os.path.realpath(root if root is not None else _default_root(path)))
    if target != base and base not in target.parents:
        raise CheckpointError(f"{path} resolves to {target}, outside {base}; medkit reads weights only from "
                              f"files inside the run directory (or the Hugging Face cache) — replace the "
                              f"link by the file itself")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise CheckpointError(f"cannot open {path}: {os.strerror(exc.errno or 0)}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a character device" if stat.S_ISCHR(st.st_mode)
                else "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        raise CheckpointError(f"{path} is {kind}" + (f" ({target})" if target != Path(os.path.abspath(path))
                              else "") + "; a weight file must be a regular file — re-download or re-create it")
    return fd, st.st_size


def _header_length(path: Path, fd: int, size: int) -> int:
    head = os.pread(fd, 8, 0)
    if len(head) < 8:
        raise CheckpointError(f"{path} has {size} bytes, too few for a safetensors file; it is truncated or "
                              f"not a weight file — re-download or re-create it")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER_BYTES:
        why = f"it declares a {n}-byte header, more than the {MAX_HEADER_BYTES // (1024 * 1024)} MB medkit accepts"
    elif 8 + n > size:
        why = f"it declares a {n}-byte header but has only {size} bytes"
    else:
        return n
    raise CheckpointError(f"{path} is not a valid safetensors file ({why}); it is corrupted or truncated "
                          f"(or crafted) — re-download or re-create it")


def check_tensors_file(path: Path, *, root: Path | None = None) -> dict[str, Any]:
    """Check a safetensors file without reading its data: an inert regular file (see
    :func:`open_weights`), a sane header, every tensor's byte range inside the file.

    Returns:
        The parsed header (tensor name → ``{"dtype", "shape", "data_offsets"}``, plus ``__metadata__``).
    """
    path = Path(path)
    fd, size = open_weights(path, root)
    try:
        n = _header_length(path, fd, size)
        raw = os.pread(fd, n, 8)
    finally:
        os.close(fd)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = (int(x) for x in info["data_offsets"])
            if not 0 <= begin <= end <= size - 8 - n:
                raise ValueError(f"tensor {name} spans bytes {begin}..{end} of a {size - 8 - n}-byte data "
                                 f"section")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); it is corrupted or "
                              f"truncated — re-download or re-create it") from exc
    return header


def load_tensors(path: Path, device: str | torch.device = "cpu", *,
                 root: Path | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a corrupted, truncated or non-regular file is a :class:`CheckpointError`.

    Before anything but its first 8 bytes is read, the file must be a regular file inside ``root``
    (see :func:`open_weights`) whose declared header fits in the file and in 100 MB.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    fd, size = open_weights(path, root)
    try:
        _header_length(path, fd, size)
        chunks, done = [], 0
        while done < size:
            chunk = os.pread(fd, min(size - done, 1 << 26), done)
            if not chunk:
                break
            chunks.append(chunk)
            done += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from exc
    finally:
        os.close(fd)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); it is corrupted or "
                              f"truncated — re-download or re-create it") from exc
    return {k: v.to(device) for k, v in tensors.items()}


def scan_tensors_file(path: Path, *, root: Path | None = None) -> dict[str, Any]:
    """:func:`check_tensors_file`, then every floating tensor checked finite one at a time (memory
    mapped, so at most one tensor is in memory); returns the header."""
    from safetensors import safe_open

    header = check_tensors_file(path, root=root)
    try:
        with safe_open(str(path), framework="pt") as fh:
            for name in sorted(k for k in header if k != "__metadata__"):
                check_finite({name: fh.get_tensor(name)}, source=str(path))
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own, unexported error types
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); it is corrupted or "
                              f"truncated — re-download or re-create it") from exc
    return header


def check_finite(tensors: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Refuse weights holding NaN or ±Inf, naming the first such tensor (in the mapping's order)."""
    for name, value in tensors.items():
        if torch.is_tensor(value) and (value.is_floating_point() or value.is_complex()):
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                raise CheckpointError(f"{source}: tensor {name} holds {int(bad.sum())} non-finite value(s) "
                                      f"(NaN/Inf) of {value.numel()}; the weights are corrupted or come from a "
                                      f"diverged run — use another checkpoint")
