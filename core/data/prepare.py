"""``medkit prepare``: run a modality's deterministic preprocessing once and write litdata shards.

The folder is indexed by the modality's own ``dataset()`` and every sample is produced by the same
functions training calls (``read_image`` for 2D, the window dataset's un-augmented ``load`` for 3D);
only random augmentation is left for load time. Work is cut into parts of consecutive samples; each
part is written to a temporary folder and renamed into place when complete, so a killed prepare
continues with the first unfinished part, ``--workers`` writes parts in processes, ``--shard i/n``
writes every n-th part, and :func:`finalize` joins the parts into one manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.api.errors import DataError, MedkitError
from medkit.api.progress import work_reporter
from medkit.data import prepare_text
from medkit.data.groups import GroupOptions, manifest_keys, split_keys_record
from medkit.data.prepared import (FORMAT, FORMAT_VERSION, MANIFEST, PartReader, config_hash, medkit_version,
                                  preprocessing_config, read_manifest)
from medkit.data.prepared_dataset import STORE_DTYPES, encode_image, encode_window
from medkit.storage.files import atomic_write_json, read_json

log = logging.getLogger(__name__)

PLAN = "plan.json"
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


@dataclass
class Summary:
    """What one ``prepare`` call did (the CLI prints it)."""

    out: Path
    written: int = 0
    reused: int = 0
    parts: int = 0
    samples: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    filtered: list[tuple[str, str]] = field(default_factory=list)
    finished: bool = False
    content_sha256: str = ""


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


def _hash_files(files: tuple[str, ...]) -> str:
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
        for i in part.samples:
            entry = dataset.entries[i]
            try:
                yield i, encode_image(dataset.modality.read_image(entry), entry.box, store["dtype"],
                                      store["max_side"])
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
              "skipped": skipped, "inputs_sha256": _hash_files(part.files) if kind != "text" else
              prepare_text.texts_sha256([dataset.load(i)["input"] for i in part.samples])}
    atomic_write_json(tmp / PART_RECORD, record)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return record


def _done(out: Path, part: Part) -> bool:
    record = out / part.dir / PART_RECORD
    if not record.is_file():
        return False
    try:
        return read_json(record).get("key") == part.key
    except (OSError, ValueError, MedkitError):
        return False


_JOB: dict[str, Any] = {}  # what forked workers inherit: the dataset and where to write


def _worker_part(part: Part) -> int:
    import torch

    torch.set_num_threads(1)
    write_part(_JOB["out"], _JOB["dataset"], _JOB["kind"], part, _JOB["store"], _JOB.get("tokenizer"))
    return part.index


def prepare(modality: Any, data: Path, out: Path, *, workers: int = 1, shard: tuple[int, int] = (0, 1),
            part_size: int = 256, store: str = "auto", max_side: int = 0, tokenizer: Any = None,
            groups: GroupOptions | None = None) -> Summary:
    """Prepare ``data`` for ``modality`` into ``out`` (see the module docstring).

    Args:
        modality: the modality, built with the run's config (its preprocessing config is recorded).
        data: the folder (or file) to read.
        out: the prepared folder; parts already there with the same key are kept.
        workers: processes writing parts (1: this process).
        shard: ``(i, n)``: write only parts ``p`` with ``p % n == i``; with ``n > 1`` join the parts
            with :func:`finalize` once every shard is done.
        part_size: samples per part (the unit of work and of resume).
        store: ``auto`` or ``float32`` (:data:`~medkit.data.prepared_dataset.STORE_DTYPES`).
        max_side: 2D only: store regions resized to at most this many pixels on their longer
            side (0: as decoded); see :func:`~medkit.data.prepared_dataset.encode_image`.
        tokenizer: text only: the run's tokenizer (``text_1d``); the word-piece ids it gives are
            stored, with its :meth:`encoding_config` recorded in ``storage.tokenizer``.
        groups: how the held-out split's group keys are found (``trainer.patient_column``,
            ``trainer.group_folder_level``); the keys are recorded so that training from the
            prepared folder splits it as it would split ``data``.
    """
    if store not in STORE_DTYPES:
        raise MedkitError(f"medkit prepare: --store must be one of {', '.join(STORE_DTYPES)}, got {store!r}")
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise MedkitError(f"medkit prepare: --shard {i}/{n} needs 0 <= i < n")
    out = Path(out)
    dataset = modality.dataset(Path(data), train=False)
    kind = kind_of(dataset)
    if kind == "windows":
        from medkit.data.cache import VolumeCache

        dataset.on_error = "raise"  # a bad volume is skipped here, never served by another volume's windows
        # parts hold whole volumes and are read window by window in order: keeping the one current
        # volume, whatever its size and the run's cache settings, preprocesses each volume once
        dataset._cache = VolumeCache(1 << 62, 1, owner=f"medkit prepare {modality.name}")
        dataset._disk = None
    if kind == "windows" and max_side:
        raise MedkitError(f"medkit prepare: --max-side resizes 2D images; modality {modality.name} stores 3D "
                          f"windows at its input_size (set modality.{modality.name}.input_size instead)")
    cfg = preprocessing_config(modality)
    storage: dict[str, Any] = {"dtype": store, "max_side": int(max_side)}
    if kind == "text":
        prepare_text.no_max_side(max_side, modality.name)
        storage["tokenizer"] = prepare_text.tokenizer_config(tokenizer, modality.name)
    parts = plan_parts(dataset, kind, max(1, int(part_size)), config_hash(cfg), storage)
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    plan = {"modality": modality.name, "kind": kind, "data": str(Path(data).resolve()), "store": storage,
            "preprocessing": cfg, "preprocessing_sha256": config_hash(cfg), "part_size": int(part_size),
            "parts": [{"dir": p.dir, "key": p.key} for p in parts], "class_names": dataset.class_names,
            "skipped": [list(s) for s in dataset.skipped],
            "filtered": [list(s) for s in getattr(dataset, "filtered", [])],
            "split_keys": split_keys_record(dataset, Path(data), groups or GroupOptions())}
    if (out / MANIFEST).exists() and _plan_of(out) != plan:
        (out / MANIFEST).unlink()  # the folder is being prepared again with other inputs or config
    atomic_write_json(out / PLAN, plan)
    mine = [p for p in parts if p.index % n == i]
    _remove_staging(out, {p.index for p in mine})
    todo = [p for p in mine if not _done(out, p)]
    summary = Summary(out, reused=len(mine) - len(todo), parts=len(parts))
    log.info("prepare %s: %d parts (%d in this shard, %d already done) from %s into %s", modality.name,
             len(parts), len(mine), summary.reused, data, out)
    shown = work_reporter(None, "parts")  # a line every few seconds: parts written, rate, time left
    shown.start(len(todo), f"prepare {modality.name}")
    if workers > 1 and len(todo) > 1:
        _JOB.update(out=out, dataset=dataset, kind=kind, store=storage, tokenizer=tokenizer)
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
                for k in pool.map(_worker_part, todo):
                    summary.written += 1
                    log.debug("prepare %s: part %d of %d written", modality.name, k + 1, len(parts))
                    shown.update(summary.written, {})
        finally:
            _JOB.clear()
    else:
        for p in todo:
            write_part(out, dataset, kind, p, storage, tokenizer)
            summary.written += 1
            shown.update(summary.written, {})
    shown.finish()
    if n == 1 or all(_done(out, p) for p in parts):
        _finalize_into(out, summary)
    return summary


def _remove_staging(out: Path, mine: set[int]) -> None:
    """Remove what a killed prepare of these parts left half-written (other shards' are theirs)."""
    for tmp in (out / PARTS).glob(".part-*.tmp-*"):
        try:
            index = int(tmp.name.split("-")[1].split(".")[0])
        except (IndexError, ValueError):
            continue
        if index in mine:
            shutil.rmtree(tmp, ignore_errors=True)


def _plan_of(out: Path) -> dict[str, Any] | None:
    try:
        return read_json(out / PLAN)
    except (OSError, ValueError, MedkitError):
        return None


def content_hash(out: Path) -> str:
    """sha256 over the sample ids and every chunk file of a prepared folder, part by part (equal
    for two preparations that stored the same samples, however often they were interrupted)."""
    h = hashlib.sha256()
    manifest = read_manifest(out)
    h.update(json.dumps(manifest["ids"]).encode())
    for p in manifest["parts"]:
        for chunk in sorted((Path(out) / p["dir"]).glob("*.bin")):
            h.update(chunk.name.encode())
            h.update(hashlib.sha256(chunk.read_bytes()).digest())
    return h.hexdigest()


def finalize(out: Path, sources: list[Path] | None = None) -> Summary:
    """Join the parts of every shard into ``out``'s manifest (``medkit prepare --merge``): the
    parts of other prepared folders in ``sources`` are copied into ``out`` first.

    Raises:
        DataError: when a part of the plan is missing or was made from other inputs or config.
    """
    out = Path(out)
    for src in sources or []:
        theirs = _plan_of(Path(src))
        if theirs is None:
            raise DataError(f"medkit prepare --merge: {src} has no {PLAN}; it is not a (partial) prepared folder")
        if not (out / PLAN).exists():
            (out / PARTS).mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / PLAN, theirs)
        elif _plan_of(out) != theirs:
            raise DataError(f"medkit prepare --merge: {src} was prepared from other inputs or config than {out}")
        for part in sorted((Path(src) / PARTS).glob("part-*")):
            if not (out / PARTS / part.name).exists():
                shutil.copytree(part, out / PARTS / f".{part.name}.copy")
                os.replace(out / PARTS / f".{part.name}.copy", out / PARTS / part.name)
    summary = Summary(out)
    _finalize_into(out, summary)
    return summary


def _finalize_into(out: Path, summary: Summary) -> None:
    plan = _plan_of(out)
    if plan is None:
        raise DataError(f"{out}: no {PLAN}; run medkit prepare first")
    records = []
    for p in plan["parts"]:
        file = out / p["dir"] / PART_RECORD
        record = read_json(file) if file.is_file() else None
        if record is None or record.get("key") != p["key"]:
            raise DataError(f"{out}: part {p['dir']} is missing or stale; run the medkit prepare shard that "
                            f"writes it (every --shard i/n), then --merge again")
        records.append(record)
    skipped = [list(s) for s in plan["skipped"]] + [list(s) for r in records for s in r["skipped"]]
    inputs = hashlib.sha256("".join(r["inputs_sha256"] for r in records).encode()).hexdigest()
    labels = None if any(r["labels"] is None for r in records) else [v for r in records for v in r["labels"]]
    chunks = [_chunk_sizes(out / p["dir"], r["count"]) for p, r in zip(plan["parts"], records)]
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "medkit_version": medkit_version(),
                "modality": plan["modality"], "kind": plan["kind"], "data": plan["data"],
                "preprocessing": plan["preprocessing"], "preprocessing_sha256": plan["preprocessing_sha256"],
                "inputs_sha256": inputs, "storage": {"format": "litdata", **plan["store"],
                                                     "litdata_version": _litdata_version()},
                "num_samples": sum(r["count"] for r in records),
                "parts": [{"dir": p["dir"], "count": r["count"], "chunk_sizes": c}
                          for p, r, c in zip(plan["parts"], records, chunks)],
                "ids": [v for r in records for v in r["ids"]], "sources": [v for r in records for v in r["sources"]],
                "labels": labels, "class_names": plan["class_names"], "skipped": skipped,
                "filtered": plan["filtered"]}
    manifest.update(manifest_keys(plan.get("split_keys"), manifest["ids"]))
    if manifest["num_samples"] == 0:
        raise DataError(f"{out}: every sample was skipped ({len(skipped)} skipped; first: {skipped[:1]}); "
                        f"nothing to train on")
    atomic_write_json(out / MANIFEST, manifest)
    summary.finished, summary.samples, summary.parts = True, manifest["num_samples"], len(records)
    summary.skipped = [(str(a), str(b)) for a, b in skipped]
    summary.filtered = [(str(a), str(b)) for a, b in plan["filtered"]]
    summary.content_sha256 = content_hash(out)


def _chunk_sizes(part: Path, count: int) -> list[int]:
    """Samples per litdata chunk of a written part (the step plan reads them from the manifest
    rather than fetching every part's index, which for remote data is one download each)."""
    return list(PartReader.chunk_sizes_of(str(part), count)) if count else []


def _litdata_version() -> str:
    from importlib.metadata import version

    return version("litdata")
