"""Append-only JSON-lines logs (``metrics/steps.jsonl``) that tolerate a torn tail.

A crash (or a full disk) in the middle of an append leaves a partial last line: everything after the
last newline. Readers drop it with a warning naming the file and the byte offset; appends cut it off
first. A line that does not parse anywhere before the tail is real corruption: a
:class:`~medkit.api.errors.CheckpointError` naming the file and the line.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

from medkit.api.errors import CheckpointError
from medkit.storage.files import atomic_write_bytes, write_error

log = logging.getLogger(__name__)


def complete_size(path: Path) -> int:
    """The length of ``path`` up to and including its last newline (what a torn tail leaves intact),
    found by reading backwards from the end (never the whole file)."""
    with open(path, "rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(pos, 1 << 16)
            fh.seek(pos - step)
            chunk = fh.read(step)
            k = chunk.rfind(b"\n")
            if k >= 0:
                return pos - step + k + 1
            pos -= step
    return 0


def _parse(path: Path, data: bytes) -> tuple[list[dict[str, Any]], list[bytes], int | None]:
    """Records and their raw lines of ``data``, and the byte offset of a torn tail (or ``None``)."""
    cut = data.rfind(b"\n") + 1
    torn = cut if cut < len(data) else None
    records: list[dict[str, Any]] = []
    raws: list[bytes] = []
    for lineno, raw in enumerate(data[:cut].split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: line {lineno} is not valid JSON ({exc}); the log is corrupted "
                                  f"before its end — restore it from a backup or delete it (the run's "
                                  f"weights do not depend on it)") from exc
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}: line {lineno} is not a JSON object; the log is corrupted")
        records.append(record)
        raws.append(raw)
    return records, raws, torn


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete record of ``path`` (``[]`` if it does not exist); a torn last line is dropped
    with a warning naming the file and its byte offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from exc
    records, _, torn = _parse(path, data)
    if torn is not None:
        log.warning("%s: dropped a torn last line at byte %d (%d bytes, left by an interrupted write); "
                    "%d complete record(s) kept", path, torn, len(data) - torn, len(records))
    return records


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Append one JSON line per record and fsync, so the log matches the checkpoint written with it.

    A torn tail left by an earlier crash is cut off first; a failed append (full disk) is undone to
    the previous length where possible and raised as a :class:`CheckpointError` naming the path.
    """
    path = Path(path)
    if not records:
        return
    payload = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    existed = path.exists()
    size = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            end = fh.seek(0, os.SEEK_END)
            size = complete_size(path) if end else 0
            if size != end:
                log.warning("%s: cutting a torn last line at byte %d (%d bytes) before appending",
                            path, size, end - size)
                fh.truncate(size)
            try:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            except OSError:
                try:
                    fh.truncate(size)
                except OSError:
                    pass
                raise
    except OSError as exc:
        raise write_error(path, exc, kept=f"the records already in {path.name} are intact" if existed
                          else f"no {path.name} was written") from exc


def truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite ``path`` (atomically) with only the records ``keep`` accepts, in order, byte for byte;
    a torn tail is dropped. Returns how many records were kept (0 when the file does not exist)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from exc
    records, raws, torn = _parse(path, data)
    if torn is not None:
        log.warning("%s: dropped a torn last line at byte %d (left by an interrupted write)", path, torn)
    kept = [raw for record, raw in zip(records, raws) if keep(record)]
    new = b"".join(raw + b"\n" for raw in kept)
    if new != data:
        atomic_write_bytes(path, new)
    return len(kept)


def _row_key(record: dict[str, Any]) -> tuple[int, int] | None:
    """A step row's position: ``(stage, step)`` (``stage`` 0 when the log has none)."""
    stage, step = record.get("stage", 0), record.get("step")
    if isinstance(stage, int) and isinstance(step, int):
        return stage, step
    return None


def _torn_where(fragment: bytes, records: list[dict[str, Any]]) -> str:
    """Which step a torn tail held: read from the fragment where it got that far, else the step after
    the last complete row."""
    stage = re.search(rb'"stage":\s*(\d+)', fragment)
    step = re.search(rb'"step":\s*(\d+)', fragment)
    if step is not None:
        return (f"stage {int(stage.group(1))} " if stage else "") + f"step {int(step.group(1))}"
    last = records[-1] if records else None
    if last is None:
        return "the first step"
    return "the step after " + (f"stage {last['stage']} " if "stage" in last else "") + f"step {last.get('step')}"


def complete_lines(path: Path, data: bytes, *, before: dict[str, Any] | None = None) -> bytes:
    """The part of log ``data`` (the bytes of ``path``) that new rows may follow: every complete line,
    byte for byte, so nothing is ever glued onto a fragment, lost or repeated.

    A torn tail (bytes after the last newline) is cut with a warning naming the step it held; rows at
    or after ``before``'s ``(stage, step)`` — the first row about to be appended — are cut with a
    warning (they would otherwise appear twice).

    Raises:
        CheckpointError: a line before the tail is not a JSON object (naming the file and the line).
    """
    records, raws, torn = _parse(Path(path), data)
    if torn is not None:
        log.warning("%s: cut a torn last line (%d bytes at byte %d) that held %s, left by an interrupted write; "
                    "that row is lost, %d complete row(s) kept", path, len(data) - torn, torn,
                    _torn_where(data[torn:], records), len(records))
    first = _row_key(before) if before is not None else None
    if first is not None:
        keep = len(records)
        while keep and (key := _row_key(records[keep - 1])) is not None and key >= first:
            keep -= 1
        if keep < len(records):
            log.warning("%s: %d row(s) from stage %d step %d on were already logged; the new rows replace them",
                        path, len(records) - keep, *first)
            raws = raws[:keep]
    out = b"".join(raw + b"\n" for raw in raws)
    return data if out == data else out
