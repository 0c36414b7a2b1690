"""``medkit prepare``: run a modality's deterministic preprocessing once and write litdata shards.

The folder is indexed by the modality's own ``dataset()`` and every sample is produced by the same
functions training calls (``read_image`` for 2D, the window dataset's un-augmented ``load`` for 3D);
only random augmentation is left for load time. Work is cut into parts of consecutive samples; each
part is written to a temporary folder and renamed into place when complete, so a killed prepare
continues with the first unfinished part, ``--workers`` writes parts in processes, ``--shard i/n``
writes every n-th part, and :func:`finalize` joins the parts into one manifest.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from medkit.api.errors import MedkitError
from medkit.api.progress import work_reporter
from medkit.data import prepare_text
from medkit.data.groups import GroupOptions, split_keys_record
from medkit.data.prepare_merge import PLAN, Summary, content_hash, finalize, finalize_into, plan_of
from medkit.data.prepare_parts import (CHUNK_BYTES, PART_RECORD, PARTS, Part, hash_files, is_done, kind_of,
                                       plan_parts, remove_staging, write_part)
from medkit.data.prepared import MANIFEST, config_hash, preprocessing_config
from medkit.data.prepared_dataset import STORE_DTYPES
from medkit.storage.files import atomic_write_json

log = logging.getLogger(__name__)

#: How a 2D sample is stored: ``view`` (the un-augmented view at ``input_size``²; load time crops
#: and flips it) or ``region`` (the decoded region, optionally capped by ``max_side``; load time
#: takes the crop from it as the folder path does).
CANVASES = ("view", "region")

__all__ = ["CANVASES", "CHUNK_BYTES", "PART_RECORD", "PARTS", "PLAN", "Part", "Summary", "content_hash", "finalize",
           "finalize_into", "hash_files", "is_done", "kind_of", "plan_of", "plan_parts", "prepare",
           "remove_staging", "write_part"]


_JOB: dict[str, Any] = {}  # what forked workers inherit: the dataset and where to write


def _worker_part(part: Part) -> int:
    import torch

    torch.set_num_threads(1)
    write_part(_JOB["out"], _JOB["dataset"], _JOB["kind"], part, _JOB["store"], _JOB.get("tokenizer"))
    return part.index


def prepare(modality: Any, data: Path, out: Path, *, workers: int = 1, shard: tuple[int, int] = (0, 1),
            part_size: int = 256, store: str = "auto", max_side: int = 0, canvas: str = "view",
            tokenizer: Any = None, groups: GroupOptions | None = None) -> Summary:
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
        max_side: 2D with ``canvas="region"`` only: store regions resized to at most this many
            pixels on their longer side (0: as decoded); see
            :func:`~medkit.data.prepared_dataset.encode_image`.
        canvas: 2D only (:data:`CANVASES`): ``view`` stores the un-augmented view at
            ``input_size``² (:func:`~medkit.data.canvas2d.encode_canvas`; ``input_size`` joins
            the preprocessing config, so a run of another size is refused), ``region`` the decoded
            region, from which training crops as the folder path does.
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
    if canvas not in CANVASES:
        raise MedkitError(f"medkit prepare: --canvas must be one of {', '.join(CANVASES)}, got {canvas!r}")
    if kind == "image2d" and canvas == "view" and max_side:
        raise MedkitError(f"medkit prepare: --max-side sizes the stored region of --canvas region; the default "
                          f"--canvas view stores modality {modality.name}'s input_size² view (drop --max-side, "
                          f"or add --canvas region)")
    if kind == "windows" and max_side:
        raise MedkitError(f"medkit prepare: --max-side resizes 2D images; modality {modality.name} stores 3D "
                          f"windows at its input_size (set modality.{modality.name}.input_size instead)")
    storage: dict[str, Any] = {"dtype": store, "max_side": int(max_side)}
    if kind == "image2d":
        storage["canvas"] = canvas
    cfg = preprocessing_config(modality, storage)
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
    if (out / MANIFEST).exists() and plan_of(out) != plan:
        (out / MANIFEST).unlink()  # the folder is being prepared again with other inputs or config
    atomic_write_json(out / PLAN, plan)
    mine = [p for p in parts if p.index % n == i]
    remove_staging(out, {p.index for p in mine})
    todo = [p for p in mine if not is_done(out, p)]
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
    if n == 1 or all(is_done(out, p) for p in parts):
        finalize_into(out, summary)
    return summary
