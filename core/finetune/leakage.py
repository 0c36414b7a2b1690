"""Fine-tuning on the data a pre-training run trained on: its held-out split must stay held out.

A pre-training run writes its split to ``metrics/split.json`` (per modality: the data folder, the
training and the held-out sources, and the group keys, patient, study, case or source, the split
was made by). When a fine-tuning run's ``--from`` is such a run and its ``--data`` is one of those
folders, a validation or test sample whose group the encoder pre-trained on would score data the
encoder has already seen (another image of a patient it trained on, say); the fine-tuning samples'
keys are found exactly as pre-training found them (:func:`medkit.data.groups.sample_keys`).
:func:`check_pretraining_overlap` refuses that (``trainer.allow_pretraining_overlap=true`` accepts
it, with a warning), and says when it cannot tell because the two readers name their sources
differently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from medkit.api.errors import ConfigError
from medkit.data.groups import GroupOptions, sample_keys
from medkit.data.split import sources_of
from medkit.storage.files import read_json

log = logging.getLogger(__name__)

#: The fine-tuning splits that must not hold a source pre-training trained on.
EVAL_SPLITS = ("val", "test")


def _same_folder(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_pretraining_overlap(origin: str | Path | None, data: str | Path, splits: Mapping[str, Any], *,
                              allow: bool = False) -> dict[str, Any] | None:
    """Compare the fine-tuning ``splits`` of ``data`` with the split of the pre-training run ``origin``.

    Returns:
        ``None`` when ``origin`` has no split of ``data`` (another folder, no ``split.json``),
        else ``{"split_json", "modality", "checked", "overlap": {split: [sources]}}``; ``checked``
        is false when no fine-tuning source appears in the pre-training split at all (the readers
        name sources differently), which is logged as a warning.

    Raises:
        ConfigError: a validation or test source was in pre-training's training split and
            ``allow`` is false; names the file, how many and which sources, and the fix.
    """
    if origin is None:
        return None
    path = Path(origin) / "metrics" / "split.json"
    if not path.is_file():
        return None
    entries = read_json(path).get("modalities", {})
    folder = Path(data).parent if Path(data).is_file() else Path(data)  # a CSV names paths from its folder
    match = next(((m, e) for m, e in entries.items() if e.get("data") and _same_folder(e["data"], folder)), None)
    if match is None:
        return None
    modality, entry = match
    if isinstance(entry.get("groups"), dict):  # split by group keys: find the same keys in these splits
        sides = entry["groups"]
        trained, held = {str(s) for s in sides.get("train", [])}, {str(s) for s in sides.get("val", [])}
        options = entry.get("key_options") or {}
        groups = GroupOptions(options.get("patient_column"), options.get("folder_level"))
        mine = {name: sample_keys(ds, folder, groups).keys for name, ds in splits.items()}
    else:  # a split.json of an earlier medkit: by source
        trained, held = {str(s) for s in entry.get("train", [])}, {str(s) for s in entry.get("val", [])}
        mine = {name: sources_of(ds) for name, ds in splits.items()}
    known = trained | held
    checked = any(s in known for srcs in mine.values() for s in srcs)
    result: dict[str, Any] = {"split_json": str(path), "modality": modality, "checked": checked, "overlap": {}}
    if not checked:
        log.warning("%s was pre-trained on as %s (%s), but none of its fine-tuning sources appears in that "
                    "split: the two readers name sources differently, so medkit cannot check that the "
                    "validation and test samples were held out of pre-training", data, modality, path)
        return result
    for name in EVAL_SPLITS:
        seen = sorted({s for s in mine.get(name, []) if s in trained})
        if seen:
            result["overlap"][name] = seen
    if result["overlap"]:
        what = "; ".join(f"{len(v)} {k} source(s), e.g. {', '.join(v[:3])}" for k, v in result["overlap"].items())
        message = (f"{data}: {what} were in the training split of the pre-training run {origin} ({path}), so "
                   f"their scores would measure samples the encoder was pre-trained on")
        if not allow:
            raise ConfigError(f"{message}; give fine-tuning's val/test only the pre-training's held-out sources "
                              f"(the 'val' list of {modality} in {path}), e.g. with a train/val/test CSV or "
                              f"split folders, or accept it with trainer.allow_pretraining_overlap=true")
        log.warning("%s (accepted: trainer.allow_pretraining_overlap=true)", message)
    return result
