"""The data of a run: which folder each modality reads, its datasets and their held-out split."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.api.collectives import barrier
from medkit.api.errors import ConfigError
from medkit.data.demo import demo_root, is_demo_path
from medkit.data.prepared import is_prepared
from medkit.data.split import sources_of, split_by_source

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """Datasets by modality with and without augmentation, and the split of each."""

    train: dict[str, Any]
    eval: dict[str, Any]
    train_indices: dict[str, list[int]]
    val_indices: dict[str, list[int]]
    #: ``metrics/split.json``: per modality, the sources on each side (whole volumes, images,
    #: patients or reports; never windows or tiles of one source on both sides).
    split: dict[str, Any] = field(default_factory=dict)


def data_paths(cfg: dict[str, Any], modalities: dict[str, Any], *, is_main: bool) -> dict[str, str]:
    """The folder each modality reads: its ``--data`` or its built-in demo data (written once, by
    rank 0; the other ranks wait, then only look it up)."""
    paths: dict[str, str] = {}
    for name, modality in modalities.items():
        given = cfg["run"]["data"].get(name)
        if given:
            path = Path(given).expanduser()
            if not path.exists():
                raise ConfigError(f"--data for modality {name!r}: {path} does not exist")
            paths[name] = str(path.resolve())
            continue
        root = demo_root() / name
        if is_main:
            path = modality.demo_data(root)
        barrier()
        if not is_main:
            path = modality.demo_data(root)
        log.info("%s: no --data given, using the built-in demo data at %s", name, path)
        paths[name] = str(path)
    return paths


def build_datasets(modalities: dict[str, Any], paths: dict[str, str], *, val_fraction: float, seed: int,
                   previous: dict[str, Any] | None = None) -> RunData:
    """Index each modality's folder once (the eval view shares the index) and split it by source.

    ``previous``: the ``split.json`` of the run this one continues (``--from``) or resumes: a source
    it held out stays held out and a source it trained on stays in training, so "held-out" keeps
    meaning data no stage of the model ever trained on; only new sources are split by the hash.
    """
    out = RunData({}, {}, {}, {})
    out.split = {"format": 1, "seed": int(seed), "val_fraction": float(val_fraction), "modalities": {}}
    kept = (previous or {}).get("modalities", {})
    for m, modality in modalities.items():
        path = Path(paths[m])
        if is_prepared(path):  # a folder written by ``medkit prepare``: its manifest lists the samples
            from medkit.data.prepared_dataset import open_prepared

            out.train[m] = open_prepared(modality, path, train=True)
        else:
            out.train[m] = modality.dataset(path, train=True)
        view = getattr(out.train[m], "view", None)
        out.eval[m] = view(train=False) if callable(view) else modality.dataset(path, train=False)
        ids, sources = list(out.train[m].ids), sources_of(out.train[m])
        train, val = split_by_source(ids, sources, val_fraction, seed)
        if m in kept:
            was_val, was_train = set(kept[m].get("val", [])), set(kept[m].get("train", []))
            val = [i for i in range(len(ids)) if sources[i] in was_val
                   or (sources[i] not in was_train and i in set(val))]
            val_set = set(val)
            train = [i for i in range(len(ids)) if i not in val_set]
        out.train_indices[m], out.val_indices[m] = train, val
        out.split["modalities"][m] = {"data": str(path), "train": sorted({sources[i] for i in train}),
                                      "val": sorted({sources[i] for i in val})}
        # what the model card states: sample counts and whether this is the built-in demo data
        out.split["modalities"][m].update(samples={"train": len(train), "val": len(val)}, demo=is_demo_path(path))
        log.info("%s: %d training / %d held-out samples (%d / %d sources) from %s", m, len(train), len(val),
                 len(out.split["modalities"][m]["train"]), len(out.split["modalities"][m]["val"]), path)
    return out
