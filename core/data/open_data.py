"""Opening a modality's data: its folder through the plugin's reader, or a ``medkit prepare`` folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medkit.api.errors import ConfigError
from medkit.data import remote
from medkit.data.demo import demo_root
from medkit.data.groups import GroupOptions
from medkit.data.prepared import is_prepared

log = logging.getLogger(__name__)


def data_location(modality: Any, name: str, given: str | Path | None, *, who: str, hint: str | None = None) -> str:
    """Where modality ``name`` reads its data: ``given`` (a URL as given; a path with ``file://``
    stripped, ``~`` expanded, made absolute), or without one the built-in demo data of ``modality``
    (written on first use).

    Args:
        modality: the created modality object (for its demo data).
        name: the modality's name.
        given: the folder, file or URL the user gave (``--data``), or ``None``.
        who: the command or measure asking, first in the error (``--data``, ``report``…).
        hint: how to fix a missing path (default: pass ``--data NAME=DIR``).

    Raises:
        ConfigError: ``given`` is a local path that does not exist.
    """
    if given and remote.is_url(str(given)):
        return remote.normalise(given)
    if given:
        path = Path(remote.normalise(given))
        if not path.exists():
            fix = hint or f"pass --data {name}=DIR with the folder they are in now"
            raise ConfigError(f"{who}: the data of modality {name!r} at {path} do not exist; {fix}")
        return str(path)
    path = Path(modality.demo_data(demo_root() / name))
    log.info("%s: no data given, using the built-in demo data at %s", name, path)
    return str(path)


def open_data(modality: Any, location: str | Path, *, train: bool = False, groups: GroupOptions | None = None) -> Any:
    """The dataset of ``modality`` at ``location``.

    A folder (or URL) written by ``medkit prepare`` is opened from its shards after checking that
    it was prepared with ``modality``'s preprocessing config (and, with ``groups``, that its split
    keys were found with those options); anything else is read by the modality's own reader.

    Args:
        modality: the modality object, created with the run's (or command's) options.
        location: a folder, file or URL (:func:`data_location`).
        train: the augmented training view (``False``: the un-augmented evaluation view).
        groups: the run's split-key options, checked against a prepared folder's.

    Raises:
        ConfigError: a prepared folder made with another preprocessing config or other split-key
            options (one line naming the first key that differs).
    """
    if is_prepared(location):
        from medkit.data.prepared_dataset import open_prepared

        dataset = open_prepared(modality, location, train=train)
        if groups is not None:
            check_prepared_keys(dataset, groups, location)
        return dataset
    return modality.dataset(Path(location), train=train)


def open_eval_dataset(modality: Any, name: str, given: str | Path | None, *, who: str,
                      hint: str | None = None) -> tuple[Any, str]:
    """The un-augmented dataset of modality ``name`` at ``given`` (else its demo data) and where it is:
    :func:`data_location` then :func:`open_data`. Every command that evaluates, embeds or draws a
    modality's samples opens them here, so a prepared folder is read (and checked) the same way."""
    location = data_location(modality, name, given, who=who, hint=hint)
    return open_data(modality, location, train=False), location


def check_prepared_keys(dataset: Any, groups: GroupOptions, path: Path | str) -> None:
    """Refuse prepared data whose group keys were found with other options than the run's.

    Raises:
        ConfigError: naming the folder and both settings.
    """
    made = getattr(dataset, "key_options", None)
    if made is not None and dict(made) != groups.as_dict():
        def said(options: dict[str, Any]) -> str:
            column, level = options.get("patient_column"), options.get("folder_level")
            return (f"trainer.patient_column={'null' if column is None else column}, "
                    f"trainer.group_folder_level={'null' if level is None else level}")
        raise ConfigError(f"prepared data {path}: its split keys were found with {said(dict(made))}, this run "
                          f"has {said(groups.as_dict())}; prepare it again with this run's overrides, or run "
                          f"with the ones it was prepared with")
