"""Joining the parts of a prepared folder into its manifest (``medkit prepare --merge``), and its content hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.api.errors import DataError, MedkitError
from medkit.data.groups import manifest_keys
from medkit.data.prepare_parts import PART_RECORD, PARTS
from medkit.data.prepared import FORMAT, FORMAT_VERSION, MANIFEST, PartReader, medkit_version, read_manifest
from medkit.storage.files import atomic_write_json, read_json

PLAN = "plan.json"


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


def plan_of(out: Path) -> dict[str, Any] | None:
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
        theirs = plan_of(Path(src))
        if theirs is None:
            raise DataError(f"medkit prepare --merge: {src} has no {PLAN}; it is not a (partial) prepared folder")
        if not (out / PLAN).exists():
            (out / PARTS).mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / PLAN, theirs)
        elif plan_of(out) != theirs:
            raise DataError(f"medkit prepare --merge: {src} was prepared from other inputs or config than {out}")
        for part in sorted((Path(src) / PARTS).glob("part-*")):
            if not (out / PARTS / part.name).exists():
                shutil.copytree(part, out / PARTS / f".{part.name}.copy")
                os.replace(out / PARTS / f".{part.name}.copy", out / PARTS / part.name)
    summary = Summary(out)
    finalize_into(out, summary)
    return summary


def finalize_into(out: Path, summary: Summary) -> None:
    plan = plan_of(out)
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
