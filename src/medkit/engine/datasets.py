"""The data of a run: which folder each modality reads, its datasets and their held-out split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit.api.collectives import barrier
from medkit.api.errors import ConfigError
from medkit.data.demo import demo_root
from medkit.data.split import split_indices

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """Datasets by modality with and without augmentation, and the split of each."""

    train: dict[str, Any]
    eval: dict[str, Any]
    train_indices: dict[str, list[int]]
    val_indices: dict[str, list[int]]


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


def build_datasets(modalities: dict[str, Any], paths: dict[str, str], *, val_fraction: float) -> RunData:
    """Index each modality's folder once (the eval view shares the index) and split it."""
    out = RunData({}, {}, {}, {})
    for m, modality in modalities.items():
        path = Path(paths[m])
        out.train[m] = modality.dataset(path, train=True)
        view = getattr(out.train[m], "view", None)
        out.eval[m] = view(train=False) if callable(view) else modality.dataset(path, train=False)
        out.train_indices[m], out.val_indices[m] = split_indices(list(out.train[m].ids), val_fraction)
        log.info("%s: %d training / %d held-out samples from %s", m, len(out.train_indices[m]),
                 len(out.val_indices[m]), path)
    return out
