"""``medkit run --config FILE``: a saved ``config.yaml`` (or the user's own YAML) as the base of a run.

The file is read through the same gate as every received file (:func:`medkit.config.yaml.load_run_config`:
no ``${...}`` interpolation, no YAML tags or aliases, no Hydra instantiation keys). Its ``run`` section
gives the selection (modalities, strategy, seed, data); ``encoder.preset`` the preset; every other
value is merged into the composed config with the schemas' types (an unknown key or a wrong type is a
one-line :class:`ConfigError` naming the file), and the command line's overrides come on top.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

from medkit.api.errors import ConfigError

log = logging.getLogger(__name__)

#: Sections whose entries are keyed by component name (only the selected components are merged).
COMPONENT_SECTIONS = ("modality", "tokenizer", "objective")
#: ``run`` keys a saved config holds that the composition derives again (never taken from a file).
DERIVED_RUN_KEYS = ("uses", "resume_overrides", "new_modalities")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A pre-training config file through the received-file gate (``load_run_config``)."""
    from medkit.config.yaml import load_run_config

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path}: is a folder; give a YAML file (a run's config.yaml is "
                          f"{path / 'config.yaml'})")
    cfg = load_run_config(path)
    run = cfg.get("run")
    if run is not None and not isinstance(run, dict):
        raise ConfigError(f"--config {path}: run must be a mapping, got {type(run).__name__}")
    if isinstance(run, dict) and "task" in run:
        raise ConfigError(f"--config {path}: is a fine-tuning config (run.task); `medkit run` takes a "
                          f"pre-training config")
    if isinstance(run, dict) and run.get("from"):
        raise ConfigError(f"--config {path}: is the config of a run that continued another model (run.from); "
                          f"continue it again with --from REF --modality NEW")
    return cfg


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"run.modalities must be a list of modality names, got {value!r}")


def selection_from_file(cfg: Mapping[str, Any], source: str) -> dict[str, Any]:
    """What the file selects: ``modalities``, ``strategy``, ``seed``, ``preset``, ``data`` (each
    only where the file says it)."""
    run = dict(cfg.get("run") or {})
    out: dict[str, Any] = {}
    if "modalities" in run:
        out["modalities"] = _names(run["modalities"])
    for key, kind in (("strategy", str), ("seed", int)):
        if run.get(key) is not None:
            if not isinstance(run[key], kind) or isinstance(run[key], bool):
                raise ConfigError(f"{source}: run.{key} must be {kind.__name__}, got {run[key]!r}")
            out[key] = run[key]
    data = run.get("data")
    if data is not None:
        if not isinstance(data, dict) or not all(v is None or isinstance(v, str) for v in data.values()):
            raise ConfigError(f"{source}: run.data must map modality names to folders, got {data!r}")
        out["data"] = {str(k): v for k, v in data.items()}
    preset = (cfg.get("encoder") or {}).get("preset") if isinstance(cfg.get("encoder"), dict) else None
    if preset is not None:
        out["preset"] = str(preset)
    unknown = sorted(set(run) - {"modalities", "strategy", "seed", "data", *DERIVED_RUN_KEYS})
    if unknown:
        raise ConfigError(f"{source}: run.{unknown[0]} is not a key medkit reads from a config file "
                          f"(run: modalities, strategy, seed, data)")
    return out


def file_values(cfg: Mapping[str, Any], *, strategy: str, file_strategy: str | None,
                source: str) -> dict[str, Any]:
    """The sections of the file to merge into a composed config (``run`` is the selection's; the
    ``strategy`` section only when the file is about the same strategy)."""
    out: dict[str, Any] = {}
    for name, value in cfg.items():
        if name == "run":
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got {value!r}")
        if name == "strategy" and file_strategy is not None and file_strategy != strategy:
            log.info("%s: its strategy section is for %s; --strategy %s starts from that strategy's defaults",
                     source, file_strategy, strategy)
            continue
        out[name] = value
    return out


def _dict_leaves(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in node.items():
        out += _dict_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return out


def merge_file_values(cfg: Any, values: Mapping[str, Any], source: str) -> Any:
    """Merge ``values`` into the composed (struct-mode, typed) OmegaConf tree ``cfg``.

    Component entries for components that were not selected are left out (logged); any other unknown
    key or a wrong type is a :class:`ConfigError` naming ``source`` and the key.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    kept: dict[str, Any] = {}
    for section, value in values.items():
        if section in COMPONENT_SECTIONS:
            have = OmegaConf.select(cfg, section) or {}
            skipped = [k for k in value if k not in have]
            if skipped:
                log.info("%s: %s.%s not used (not selected in this run)", source, section, ",".join(skipped))
            value = {k: v for k, v in value.items() if k in have}
        kept[section] = value
    from medkit.config.overrides import expected_type

    for key in _dict_leaves(kept):
        head, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, head) if head else cfg
        if parent is None or not OmegaConf.is_dict(parent) or leaf not in parent:
            raise ConfigError(f"{source}: no config key {key!r} (see `medkit config show` for the keys)")
        value = kept
        for part in key.split("."):
            value = value[part]
        single: dict[str, Any] = {}
        node = single
        for part in key.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[leaf] = value
        try:  # key by key, so that a refusal names the key and the type it expects
            cfg = OmegaConf.merge(cfg, OmegaConf.create(single))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{source}: {key} expects {expected_type(parent._get_node(leaf))}, got "
                              f"{value!r}") from exc
    return cfg
