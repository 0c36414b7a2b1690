"""The data of a run: which folder each modality reads, its datasets and their held-out split."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.api.collectives import barrier
from medkit.data.demo import demo_root, is_demo_path
from medkit.data.groups import GroupOptions, SampleKeys, sample_keys
from medkit.data.open_data import check_prepared_keys as check_prepared_keys  # re-exported: its first home
from medkit.data.open_data import data_location, open_data
from medkit.data.remote import is_url
from medkit.data.split import sources_of, split_by_group

log = logging.getLogger(__name__)

#: How a duplicate's shared identity is named in its warning.
IDENTITY_NAMES = {"sop": "SOPInstanceUID", "series": "SeriesInstanceUID", "sha256": "file bytes"}


@dataclass
class RunData:
    """Datasets by modality with and without augmentation, and the split of each."""

    train: dict[str, Any]
    eval: dict[str, Any]
    train_indices: dict[str, list[int]]
    val_indices: dict[str, list[int]]
    #: ``metrics/split.json``: per modality, the sources on each side (whole volumes, images,
    #: patients or reports; never windows or tiles of one source on both sides), and the group
    #: keys the split was made by (``key``: how many of each kind, ``groups``, ``duplicates``).
    split: dict[str, Any] = field(default_factory=dict)


def data_paths(cfg: dict[str, Any], modalities: dict[str, Any], *, is_main: bool) -> dict[str, str]:
    """The folder each modality reads: its ``--data`` or its built-in demo data (written once, by
    rank 0; the other ranks wait, then only look it up)."""
    paths: dict[str, str] = {}
    for name, modality in modalities.items():
        given = cfg["run"]["data"].get(name)
        if given:  # a folder, file or URL (prepared data streamed by litdata: s3://, gs://, local:, …)
            paths[name] = data_location(modality, name, given, who="--data")
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
                   previous: dict[str, Any] | None = None, groups: GroupOptions | None = None) -> RunData:
    """Index each modality's folder once (the eval view shares the index) and split it by group.

    A group is the most specific grouping known for a sample (patient, study, case, folder, else its
    source; :mod:`medkit.data.groups`, set by ``groups``), and duplicate images join their groups.
    ``previous``: the ``split.json`` of the run this one continues (``--from``) or resumes: a group
    it held out stays held out and a group it trained on stays in training, so "held-out" keeps
    meaning data no stage of the model ever trained on; only new groups are split by the hash.
    """
    groups = groups or GroupOptions()
    out = RunData({}, {}, {}, {})
    out.split = {"format": 1, "seed": int(seed), "val_fraction": float(val_fraction), "modalities": {}}
    kept = (previous or {}).get("modalities", {})
    for m, modality in modalities.items():
        path = paths[m] if is_url(paths[m]) else Path(paths[m])
        out.train[m] = open_data(modality, path, train=True, groups=groups)  # a prepared folder: checked
        view = getattr(out.train[m], "view", None)
        out.eval[m] = view(train=False) if callable(view) else modality.dataset(path, train=False)
        sources = sources_of(out.train[m])
        root = getattr(out.train[m], "root", None) or \
            (path.parent if isinstance(path, Path) and path.is_file() else path)
        keys = sample_keys(out.train[m], Path(root), groups)
        train, val, both = split_by_group(sources, keys.groups, keys.keys, val_fraction, seed, previous=kept.get(m))
        if both:
            log.warning("%s: %d group(s) were on both sides of the split of the run this one continues (e.g. "
                        "%s: that split was made by another key); they stay in training, so held-out data remain "
                        "data no stage trained on", m, len(both), both[0])
        out.train_indices[m], out.val_indices[m] = train, val
        out.split["modalities"][m] = {"data": str(path), "train": sorted({sources[i] for i in train}),
                                      "val": sorted({sources[i] for i in val}), **split_record(keys, train, val,
                                                                                              groups)}
        report_keys(m, keys, len(set(sources)))
        # what the model card states: sample counts and whether this is the built-in demo data
        out.split["modalities"][m].update(samples={"train": len(train), "val": len(val)},
                                          demo=isinstance(path, Path) and is_demo_path(path))
        log.info("%s: %d training / %d held-out samples (%d / %d sources) from %s", m, len(train), len(val),
                 len(out.split["modalities"][m]["train"]), len(out.split["modalities"][m]["val"]), path)
        if sources and not val:  # said now, not as n/a in the matrices at the end of the run
            log.warning("%s: NO HELD-OUT SAMPLE: all %d samples (%d sources) of %s are in training, so this "
                        "modality's held-out loss and probes will read n/a; add data (two or more sources, e.g. "
                        "slides, volumes or patients) or raise trainer.val_fraction", m, len(sources),
                        len(set(sources)), path)
    return out


def split_record(keys: SampleKeys, train: list[int], val: list[int], groups: GroupOptions) -> dict[str, Any]:
    """What ``split.json`` records of the key: its kinds (and how many keys of each), the options
    it was found with, the keys on each side and the duplicate images found."""
    return {"key": keys.kind_counts(), "key_options": groups.as_dict(),
            "groups": {"train": sorted({keys.keys[i] for i in train}), "val": sorted({keys.keys[i] for i in val})},
            "duplicates": keys.duplicates}


def report_keys(modality: str, keys: SampleKeys, n_sources: int) -> None:
    """Log the key the split was made by, every duplicate found, and a split with one group."""
    kinds = ", ".join(f"{kind} ({n})" for kind, n in keys.kind_counts().items())
    log.info("%s: held-out split by %s", modality, kinds)
    for dup in keys.duplicates:
        same = " and ".join(IDENTITY_NAMES.get(i.split(":", 1)[0], i) for i in dup["identities"])
        log.warning("%s: duplicate image in %s (same %s); kept on one side of the split (groups %s)", modality,
                    ", ".join(dup["files"][:4]), same, ", ".join(dup["keys"][:4]))
    if len(set(keys.groups)) == 1 and n_sources > 1:
        log.warning("%s: all %d sources share one group (%s), so nothing can be held out; if that is not one "
                    "patient, set trainer.patient_column or trainer.group_folder_level", modality, n_sources,
                    keys.groups[0])

