"""Reading ``.pth`` files of other codebases: ``torch.load(weights_only=True)`` plus a named allow-list."""

from __future__ import annotations

import os
import re
from pathlib import Path
from pickle import UnpicklingError  # the exception class only: nothing here unpickles
from typing import Any, Callable, Sequence

import torch

from medkit.api.errors import CheckpointError


def qualname(cls: type) -> str:
    """``module.QualName`` of a class, as a pickle names it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def unsafe_globals(path: str | os.PathLike[str]) -> list[str]:
    """Classes/functions the file's pickle names outside torch's weights-only allow-list (torch >= 2.5;
    an empty list where torch cannot tell, e.g. a legacy-format file: the weights-only load decides)."""
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None:
        return []
    try:
        return list(finder(str(path)))
    except Exception:  # noqa: BLE001 - see above
        return []


def _torch_load(path: Path) -> Any:
    try:  # memory-mapped: optimizer moments and other unused entries are never read
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(str(path), map_location="cpu", weights_only=True)


def load_restricted(path: str | os.PathLike[str], allowed: Sequence[type], *, refusal: Callable[[str], str],
                    unreadable: Callable[[str], str],
                    scan: Callable[[Path], list[str]] | None = None) -> Any:
    """The object in the torch file ``path``, read with ``torch.load(weights_only=True)``.

    Besides tensors, numbers and containers, only the classes in ``allowed`` may be pickled; any other
    class is refused by name before anything is unpickled (and again by the weights-only unpickler).

    Args:
        path: the file.
        allowed: classes the file may pickle (e.g. ``argparse.Namespace`` for saved ``args``).
        refusal: the error message, given the qualified name of the refused class.
        unreadable: the error message, given the first line of torch's error (not a torch file).
        scan: lists the globals a file names (default :func:`unsafe_globals`).

    Raises:
        CheckpointError: another pickled class, or not a readable torch file.
    """
    path = Path(path)
    names = {qualname(c) for c in allowed}
    others = [n for n in (scan or unsafe_globals)(path) if n not in names]
    if others:
        raise CheckpointError(refusal(others[0]))
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return _torch_load(path)
    except UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise CheckpointError(refusal(found.group(1) if found else "an object outside the allow-list")) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(unreadable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from exc
