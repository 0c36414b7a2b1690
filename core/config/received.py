"""The one gate for files received in a run directory, a checkpoint or a Hub repository.

Every command that reads a run it did not just write (``run --resume``, ``run --from``, ``finetune
--from``, ``evaluate``, ``embed``, ``report``, ``push``, ``pull``) reads ``config.yaml``,
``config.json`` and ``manifest.json`` through :func:`received_config`, :func:`received_architecture`
and :func:`received_manifest`. They refuse, with one line naming the file and the key path:

- an interpolation (``${...}``) in a key or a string value: medkit never resolves one in a file it
  reads back (it could read the environment or files, and ``push`` would upload them);
- a Hydra instantiation key (``_target_``, ``_args_``, ``_partial_``, ``_convert_``,
  ``_recursive_``) anywhere: medkit builds components by their registered names only and writes none
  of these keys, so only a crafted or hand-edited file holds one;
- an explicit YAML tag (``!!python/...``, ``!foo``; refused while parsing, see
  :mod:`medkit.config.yaml`);
- a value of the wrong type where medkit reads one (a section that is not a mapping, a stage list
  that is not a list of modality names, ...), so that no crafted file reaches the code that reads it
  as a bare ``AttributeError``/``TypeError``.

Everything refused is a :class:`~medkit.api.errors.MedkitError` (``ConfigError`` for what a file
holds, ``CheckpointError`` for a file that is missing or not a file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medkit.api.errors import CheckpointError, ConfigError

#: Keys Hydra's ``instantiate`` acts on; none is ever written by medkit.
INSTANTIATION_KEYS = frozenset({"_target_", "_args_", "_partial_", "_convert_", "_recursive_"})


def _key_path(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def check_received(data: Any, source: str, prefix: str = "") -> None:
    """Refuse interpolations and instantiation keys anywhere in a loaded config or manifest.

    Args:
        data: plain containers (dicts, lists, scalars) as parsed from the file.
        source: the file it came from (named in the message).
        prefix: the key path of ``data`` inside the file (for recursion).
    """
    if isinstance(data, dict):
        for key, value in data.items():
            where = _key_path(prefix, key)
            if isinstance(key, str) and "${" in key:
                raise ConfigError(f"{source}: key {where!r} is an interpolation; medkit never resolves "
                                  f"${{...}} in a received config; rename the key")
            if key in INSTANTIATION_KEYS:
                raise ConfigError(f"{source}: {where} is a {key} key; medkit builds components by their "
                                  f"registered name only and never imports or calls what a file names; "
                                  f"remove the key (the file was crafted or hand-edited)")
            check_received(value, source, where)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            check_received(value, source, f"{prefix}[{i}]")
    elif isinstance(data, str) and "${" in data:
        raise ConfigError(f"{source}: {prefix or 'the document'} holds the interpolation {data!r}; medkit "
                          f"never resolves ${{...}} in a received config (it could read your environment "
                          f"or files); replace it with a literal value")


# -- types of what medkit reads ------------------------------------------------------------------
_NAMES = {dict: "a mapping", list: "a list", str: "a string", bool: "true or false", int: "an integer",
          float: "a number", type(None): "null"}
Check = Callable[[Any, str, str], None]


def _is(*types: type) -> Check:
    """A check that the value has one of ``types`` (``bool`` is never an ``int`` here)."""

    def check(value: Any, source: str, where: str) -> None:
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            want = " or ".join(dict.fromkeys(_NAMES.get(t, t.__name__) for t in types))
            raise ConfigError(f"{source}: {where} must be {want}, not {type(value).__name__} {_short(value)}; "
                              f"the file was not written by this medkit (crafted or damaged)")
    return check


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _list_of(item: Check, *, optional: bool = False) -> Check:
    def check(value: Any, source: str, where: str) -> None:
        if optional and value is None:
            return
        _is(list)(value, source, where)
        for i, v in enumerate(value):
            item(v, source, f"{where}[{i}]")
    return check


def _map_of(item: Check, *, optional: bool = False) -> Check:
    def check(value: Any, source: str, where: str) -> None:
        if optional and value is None:
            return
        _is(dict)(value, source, where)
        for k, v in value.items():
            item(v, source, _key_path(where, k))
    return check


def _fields(spec: dict[str, Check], *, optional: bool = False) -> Check:
    """A mapping whose listed keys, where present, pass their checks (other keys are not read here)."""

    def check(value: Any, source: str, where: str) -> None:
        if optional and value is None:
            return
        _is(dict)(value, source, where or "the document")
        for key, sub in spec.items():
            if key in value:
                sub(value[key], source, _key_path(where, key))
    return check


_STR, _OPT_STR, _BOOL = _is(str), _is(str, type(None)), _is(bool)
_INT_OR_NONE, _NUMBER = _is(int, type(None)), _is(int, float)
_MAPPING = _is(dict)
_USE = _fields({"tokenizer": _STR, "objective": _STR})
_USES = _map_of(_USE)
_SECTIONS = _map_of(_MAPPING)  # tokenizer.<name>, objective.<name>, modality.<name>

ARCHITECTURE = _fields({"library": _STR, "format": _is(int), "encoder": _MAPPING, "uses": _USES,
                        "tokenizer": _SECTIONS, "objective": _SECTIONS, "trunk": _map_of(_is(int, float, str, bool)),
                        "shared_heads": _map_of(_STR)})  # {alias: owner}: modalities sharing one pretext head
PRETRAIN_CONFIG = _fields({
    "run": _fields({"modalities": _list_of(_STR), "strategy": _STR, "seed": _is(int), "uses": _USES,
                    "data": _map_of(_OPT_STR, optional=True), "new_modalities": _list_of(_STR, optional=True),
                    "from": _fields({"ref": _STR, "path": _STR, "stages": _list_of(_list_of(_STR)),
                                     "strategy": _OPT_STR}, optional=True),
                    "resume_overrides": _list_of(_STR, optional=True)}),
    "encoder": _MAPPING, "optim": _MAPPING, "trainer": _MAPPING, "strategy": _MAPPING,
    "modality": _SECTIONS, "tokenizer": _SECTIONS, "objective": _SECTIONS})
FINETUNE_CONFIG = _fields({
    "run": _fields({"task": _STR, "modality": _STR, "dims": _is(int), "tokenizer": _STR, "data": _OPT_STR,
                    "from": _OPT_STR, "recipe": _OPT_STR, "seed": _is(int)}),
    "backbone": _MAPPING, "encoder": _MAPPING, "tokenizer": _SECTIONS, "task": _MAPPING, "optim": _MAPPING,
    "trainer": _MAPPING})
_STAGE = _fields({"index": _is(int), "modalities": _list_of(_STR), "status": _STR, "steps": _is(int),
                  "mix": _map_of(_NUMBER), "source": _STR})
PRETRAIN_MANIFEST = _fields({
    "format": _is(int), "strategy": _OPT_STR, "modalities": _list_of(_STR), "stages": _list_of(_STAGE),
    "stages_done": _list_of(_list_of(_STR)), "current": _fields({"stage": _INT_OR_NONE, "step": _INT_OR_NONE}),
    "finished": _BOOL, "data": _map_of(_OPT_STR, optional=True), "world_size": _is(int),
    "from": _fields({"ref": _STR, "stages": _list_of(_list_of(_STR)), "strategy": _OPT_STR}, optional=True),
    "files": _map_of(_STR), "resume_overrides": _list_of(_STR), "config_hash": _OPT_STR,
    "versions": _map_of(_OPT_STR), "seed": _is(int)})
FINETUNE_MANIFEST = _fields({
    "format": _is(int), "kind": _STR, "task": _STR, "modality": _STR, "dims": _is(int), "backbone": _STR,
    "from": _OPT_STR, "data": _OPT_STR, "class_names": _list_of(_STR, optional=True), "step": _is(int),
    "max_steps": _is(int), "finished": _BOOL, "best_step": _INT_OR_NONE, "files": _map_of(_STR)})


def check_run_config(cfg: Any, source: str) -> dict[str, Any]:
    """``config.yaml`` (pre-training or fine-tuning) after parsing: inert and of the expected types."""
    check_received(cfg, source)
    _MAPPING(cfg, source, "the document")
    finetune = isinstance(cfg.get("run"), dict) and "task" in cfg["run"]
    (FINETUNE_CONFIG if finetune else PRETRAIN_CONFIG)(cfg, source, "")
    required = ("task", "modality") if finetune else ("modalities", "strategy", "uses")
    missing = ["run"] if not isinstance(cfg.get("run"), dict) else \
        [f"run.{k}" for k in required if k not in cfg["run"]]
    if missing:
        raise ConfigError(f"{source}: {missing[0]} is missing; every config medkit writes has it, so the file "
                          f"was not written by this medkit (crafted or damaged)")
    return cfg


def check_architecture(arch: Any, source: str) -> dict[str, Any]:
    """A checkpoint's ``config.json``: inert, ``"library": "medkit"``, format 1, typed sections."""
    check_received(arch, source)
    if not isinstance(arch, dict) or arch.get("library") != "medkit":
        raise CheckpointError(f"{source} is not a medkit architecture file (no \"library\": \"medkit\")")
    if arch.get("format") != 1:
        raise CheckpointError(f"{source} has format {arch.get('format')!r}; this medkit reads format 1, "
                              f"upgrade medkit")
    for key in ("encoder", "uses", "tokenizer", "objective"):
        if not isinstance(arch.get(key), dict):
            raise CheckpointError(f"{source}: section {key!r} is missing or not a mapping")
    for m, use in arch["uses"].items():
        if not (isinstance(use, dict) and isinstance(use.get("tokenizer"), str)
                and isinstance(use.get("objective"), str)):
            raise CheckpointError(f"{source}: uses.{m} must name a tokenizer and an objective")
    ARCHITECTURE(arch, source, "")
    return arch


def check_manifest(manifest: Any, source: str) -> dict[str, Any]:
    """A run's ``manifest.json`` (pre-training or fine-tuning): inert and of the expected types."""
    check_received(manifest, source)
    _MAPPING(manifest, source, "the document")
    (FINETUNE_MANIFEST if manifest.get("kind") == "finetune" else PRETRAIN_MANIFEST)(manifest, source, "")
    return manifest


# -- readers ---------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> Any:
    from medkit.config.yaml import _read_text

    text = _read_text(path, what)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the file is corrupted") from exc


def received_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run directory's ``config.yaml`` (or the file itself) through the gate."""
    from medkit.config.yaml import CONFIG_FILE, load_run_config

    path = Path(path)
    file = path / CONFIG_FILE if path.is_dir() else path
    return check_run_config(load_run_config(path), str(file))


def received_architecture(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's ``config.json`` (the file) through the gate."""
    path = Path(path)
    return check_architecture(_read_json(path, "JSON config"), str(path))


def received_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's ``manifest.json`` (the file) through the gate."""
    path = Path(path)
    return check_manifest(_read_json(path, "manifest"), str(path))


class YamlKeyPath:
    """The key path (``trainer.device``, ``run.modalities[0]``) of each node of a YAML event stream,
    so that a refusal made while parsing (a tag, an alias) names where in the file it is."""

    def __init__(self) -> None:
        self._stack: list[list[Any]] = []  # ["map", path, key, expecting_key] | ["seq", path, index]

    def node(self, event: Any) -> str:
        """The path of the node that ``event`` (a scalar, alias or collection start) begins."""
        import yaml

        path = ""
        if self._stack:
            top = self._stack[-1]
            if top[0] == "seq":
                path = f"{top[1]}[{top[2]}]"
                top[2] += 1
            elif top[3]:  # a key
                key = event.value if isinstance(event, yaml.ScalarEvent) else "?"
                path = _key_path(top[1], key)
                top[2], top[3] = key, False
            else:
                path = _key_path(top[1], top[2])
                top[3] = True
        if isinstance(event, yaml.MappingStartEvent):
            self._stack.append(["map", path, None, True])
        elif isinstance(event, yaml.SequenceStartEvent):
            self._stack.append(["seq", path, 0])
        return path

    def end(self) -> None:
        self._stack.pop()


def refuse_tag(event: Any, path: str, source: str) -> None:
    """An explicit YAML tag (``!!python/object``, ``!!str``, ``!custom``) is refused: medkit writes
    none, and a loader that honoured one could build objects from the file."""
    tag = getattr(event, "tag", None)
    if tag is not None:
        raise ConfigError(f"{source}: {path or 'the document'} carries the YAML tag {tag!r}; medkit configs "
                          f"hold plain values only; remove the tag")


# -- what travels: a received config re-emitted from the typed schema ---------------------------------
#: ``run.*`` keys of a pre-training config (what :func:`medkit.config.compose.compose`,
#: ``--from`` and ``--resume`` write there).
RUN_KEYS = ("modalities", "strategy", "seed", "data", "uses", "from", "new_modalities", "resume_overrides")
#: Top-level keys of a pre-training ``manifest.json`` and of a stage entry in it.
MANIFEST_KEYS = ("format", "strategy", "from", "modalities", "stages", "stages_done", "current", "finished",
                 "config_hash", "versions", "data", "seed", "world_size", "files", "resume_overrides")
STAGE_KEYS = ("index", "modalities", "status", "steps", "mix", "source")
ARCHITECTURE_KEYS = ("library", "format", "encoder", "uses", "tokenizer", "objective", "trunk", "shared_heads")


def _schema_fields(kind: str, name: str, host: Any) -> tuple[Any, list[str]]:
    """The structured config class of a section and its user-facing field names."""
    import dataclasses

    from medkit.config.schemas import SCHEMAS
    from medkit.config.store import component_config

    cls = SCHEMAS[kind] if kind in SCHEMAS else component_config(kind, name, host)
    return cls, [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]


def _typed_section(kind: str, name: str, values: dict[str, Any], source: str, where: str, host: Any,
                   dropped: list[str]) -> dict[str, Any] | None:
    """``values`` restricted to the fields of the section's schema, type-checked against it."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from medkit.api.errors import PluginError
    from medkit.config.overrides import strip_targets

    try:
        cls, names = _schema_fields(kind, name, host)
    except PluginError:
        dropped.append(f"{where} ({kind} {name!r} is not installed here, so its keys cannot be checked)")
        return None
    dropped += [_key_path(where, k) for k in values if k not in names]
    known = {k: v for k, v in values.items() if k in names}
    try:
        node = OmegaConf.merge(OmegaConf.structured(cls), known)
        out = strip_targets(OmegaConf.to_container(node, resolve=False))
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {where}: {str(exc).splitlines()[0]}; the file was not written by this "
                          f"medkit (crafted or damaged)") from exc
    return {k: out[k] for k in names if k in out}


def reemit_run_config(cfg: dict[str, Any], source: str, host: Any) -> tuple[dict[str, Any], list[str]]:
    """A pre-training ``config.yaml`` rebuilt from the typed schema: every section and key the schema
    (:mod:`medkit.config.schemas`, the components' registered configs) knows, with its received value
    type-checked; nothing else. Returns the config and the key paths left out.

    Args:
        cfg: the config as read through :func:`received_config`.
        source: the file (named in messages).
        host: the plugin host (the components' registered config schemas).
    """
    check_run_config(cfg, source)
    dropped: list[str] = [k for k in cfg if k not in ("run", "encoder", "optim", "trainer", "strategy",
                                                          "modality", "tokenizer", "objective")]
    run = cfg.get("run") or {}
    dropped += [f"run.{k}" for k in run if k not in RUN_KEYS]
    out: dict[str, Any] = {"run": {k: run[k] for k in RUN_KEYS if k in run}}
    if isinstance(out["run"].get("uses"), dict):
        out["run"]["uses"] = {m: {"tokenizer": u["tokenizer"], "objective": u["objective"]}
                              for m, u in out["run"]["uses"].items()}
    for section in ("encoder", "optim", "trainer"):
        if section in cfg:
            out[section] = _typed_section(section, section, cfg[section], source, section, host, dropped)
    if "strategy" in cfg and isinstance(run.get("strategy"), str):
        typed = _typed_section("strategy", run["strategy"], cfg["strategy"], source, "strategy", host, dropped)
        if typed is not None:
            out["strategy"] = typed
    for kind in ("modality", "tokenizer", "objective"):
        if kind not in cfg:
            continue
        out[kind] = {}
        for name, values in cfg[kind].items():
            typed = _typed_section(kind, name, values, source, f"{kind}.{name}", host, dropped)
            if typed is not None:
                out[kind][name] = typed
    return out, dropped


def reemit_architecture(arch: dict[str, Any], source: str, host: Any) -> tuple[dict[str, Any], list[str]]:
    """A checkpoint's ``config.json`` with only the keys medkit writes, its sections type-checked
    against their schemas (see :func:`reemit_run_config`)."""
    check_architecture(arch, source)
    dropped = [k for k in arch if k not in ARCHITECTURE_KEYS]
    out = {k: arch[k] for k in ARCHITECTURE_KEYS if k in arch}
    out["encoder"] = _typed_section("encoder", "encoder", arch["encoder"], source, "encoder", host, dropped)
    out["uses"] = {m: {"tokenizer": u["tokenizer"], "objective": u["objective"]} for m, u in arch["uses"].items()}
    for kind in ("tokenizer", "objective"):
        typed = {name: _typed_section(kind, name, values, source, f"{kind}.{name}", host, dropped)
                 for name, values in arch[kind].items()}
        missing = [name for name, values in typed.items() if values is None]
        if missing:
            raise ConfigError(f"{source}: {kind} {missing[0]!r} is not installed here; install its plugin "
                              f"to publish this checkpoint")
        out[kind] = typed
    return out, dropped


def reemit_manifest(manifest: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """A pre-training ``manifest.json`` with only the keys medkit writes (stage entries too)."""
    check_manifest(manifest, source)
    dropped = [k for k in manifest if k not in MANIFEST_KEYS]
    out = {k: manifest[k] for k in MANIFEST_KEYS if k in manifest}
    if isinstance(out.get("stages"), list):
        out["stages"] = [{k: s[k] for k in STAGE_KEYS if k in s} for s in out["stages"]]
        dropped += [f"stages[{i}].{k}" for i, s in enumerate(manifest["stages"]) for k in s if k not in STAGE_KEYS]
    if isinstance(out.get("from"), dict):
        out["from"] = {k: out["from"][k] for k in ("ref", "stages", "strategy") if k in out["from"]}
    return out, dropped
