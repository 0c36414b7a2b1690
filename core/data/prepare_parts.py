"""``medkit prepare``'s unit of work: the parts a folder is cut into, their keys, and writing one part atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit.api.errors import DataError, MedkitError
from medkit.data import prepare_text
from medkit.data.canvas2d import encode_canvas
from medkit.data.prepared_dataset import encode_image, encode_window
from medkit.storage.files import atomic_write_json, read_json

PARTS = "parts"
PART_RECORD = "part.json"
#: litdata chunk size: big enough for sequential reads, small enough that one read stays cheap.
CHUNK_BYTES = "64MB"


@dataclass(frozen=True)
class Part:
    """One unit of work: consecutive sample indices of the folder dataset and the files they read."""

    index: int
    samples: tuple[int, ...]
    files: tuple[str, ...]
    key: str = ""

    @property
    def dir(self) -> str:
        return f"{PARTS}/part-{self.index:05d}"


def kind_of(dataset: Any) -> str:
    """``image2d`` (an :class:`~medkit.data.modality2d.Image2DDataset`), ``windows`` (a
    :class:`~medkit.data.windows.WindowDataset`) or ``text`` (samples whose input is text: reports).

    Raises:
        MedkitError: for a modality whose data ``medkit prepare`` cannot store yet.
    """
    from medkit.data.modality2d import Image2DDataset
    from medkit.data.windows import WindowDataset

    if isinstance(dataset, Image2DDataset):
        return "image2d"
    if isinstance(dataset, WindowDataset):
        return "windows"
    if prepare_text.is_text(dataset):
        return "text"
    raise MedkitError(f"medkit prepare: modality data of type {type(dataset).__name__} cannot be prepared yet "
                      f"(2D image, 3D window and text modalities can); train it from its folder")


def plan_parts(dataset: Any, kind: str, part_size: int, cfg_hash: str, store: dict[str, Any]) -> list[Part]:
    """Consecutive samples in parts of about ``part_size`` (3D: whole volumes, so each volume is
    preprocessed once), each keyed by the config, the storage dtype and its files' names, sizes
    and modification times (a part whose key changed is written again)."""
    groups: list[tuple[list[int], list[Path]]] = []
    if kind == "text":  # texts are held in memory: a part's key hashes them instead of file stats
        for lo in range(0, len(dataset), part_size):
            groups.append((list(range(lo, min(lo + part_size, len(dataset)))), []))
    elif kind == "image2d":
        for lo in range(0, len(dataset.entries), part_size):
            entries = dataset.entries[lo:lo + part_size]
            groups.append((list(range(lo, lo + len(entries))), list(dict.fromkeys(e.path for e in entries))))
    else:
        from medkit.data.windows import window_starts

        first, current = 0, ([], [])  # type: ignore[var-annotated]
        for v, vol in enumerate(dataset.volumes):
            n = len(window_starts(dataset.depths[v], dataset.depth, dataset.stride))
            current[0].extend(range(first, first + n))
            current[1].extend(Path(p) for p in vol.paths)
            first += n
            if len(current[0]) >= part_size:
                groups.append(current)
                current = ([], [])
        if current[0]:
            groups.append(current)
    parts = []
    for k, (samples, files) in enumerate(groups):
        stats: Any = [(str(f), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
        if kind == "text":
            stats = prepare_text.texts_sha256([dataset.load(i)["input"] for i in samples])
        key = hashlib.sha256(json.dumps([cfg_hash, store, kind, [dataset.ids[i] for i in samples], stats]
                                        ).encode()).hexdigest()
        parts.append(Part(k, tuple(samples), tuple(str(f) for f in files), key))
    return parts


def hash_files(files: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _items(dataset: Any, kind: str, part: Part, store: dict[str, Any], skipped: list[tuple[str, str]],
           tokenizer: Any = None):
    """(sample index, stored item) of every sample of ``part`` that can be read; the others are
    appended to ``skipped`` with the reason."""
    if kind == "text":
        yield from prepare_text.text_items(dataset, part.samples, tokenizer, store["tokenizer"]["ids_dtype"])
        return
    if kind == "image2d":
        size = int(dataset.modality.options.input_size)
        for i in part.samples:
            entry = dataset.entries[i]
            try:
                img = dataset.modality.read_image(entry)
                yield i, (encode_canvas(img, entry.box, size, store["dtype"]) if store.get("canvas") == "view"
                          else encode_image(img, entry.box, store["dtype"], store["max_side"]))
            except (DataError, OSError, ValueError) as exc:
                skipped.append((entry.id, f"unreadable: {exc}"))
        return
    failed: set[str] = set()
    for i in part.samples:
        vol = dataset.sources[i]
        if vol in failed:
            continue
        try:
            yield i, encode_window(dataset.load(i, seed=None)["input"], store["dtype"])
        except (DataError, OSError, ValueError) as exc:
            failed.add(vol)
            skipped.append((vol, f"unreadable: {exc}"))


def write_part(out: Path, dataset: Any, kind: str, part: Part, store: dict[str, Any],
               tokenizer: Any = None) -> dict[str, Any]:
    """Write ``part`` under ``out/parts`` (litdata chunks + ``part.json``), atomically: filled in a
    temporary folder and renamed into place only when complete. Returns its record."""
    from litdata.streaming.writer import BinaryWriter

    final = out / part.dir
    tmp = out / PARTS / f".part-{part.index:05d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    skipped: list[tuple[str, str]] = []
    kept: list[int] = []
    writer: Any = None
    for i, item in _items(dataset, kind, part, store, skipped, tokenizer):
        if writer is None:
            writer = BinaryWriter(str(tmp), chunk_bytes=CHUNK_BYTES)
        writer[len(kept)] = item
        kept.append(i)
    if writer is not None:
        writer.done()
        writer.merge()
    labels = getattr(dataset, "labels", None)
    record = {"part": part.index, "key": part.key, "count": len(kept), "ids": [dataset.ids[i] for i in kept],
              "sources": [str(dataset.sources[i]) for i in kept],
              "labels": None if labels is None else [int(labels[i]) for i in kept],
              "skipped": skipped, "inputs_sha256": hash_files(part.files) if kind != "text" else
              prepare_text.texts_sha256([dataset.load(i)["input"] for i in part.samples])}
    atomic_write_json(tmp / PART_RECORD, record)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return record


def is_done(out: Path, part: Part) -> bool:
    record = out / part.dir / PART_RECORD
    if not record.is_file():
        return False
    try:
        return read_json(record).get("key") == part.key
    except (OSError, ValueError, MedkitError):
        return False


def remove_staging(out: Path, mine: set[int]) -> None:
    """Remove what a killed prepare of these parts left half-written (other shards' are theirs)."""
    for tmp in (out / PARTS).glob(".part-*.tmp-*"):
        try:
            index = int(tmp.name.split("-")[1].split(".")[0])
        except (IndexError, ValueError):
            continue
        if index in mine:
            shutil.rmtree(tmp, ignore_errors=True)
