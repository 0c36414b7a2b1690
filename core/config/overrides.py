"""``KEY=VALUE`` overrides: applied to a typed OmegaConf tree at compose time, or (a safe few) on resume.

Every refusal is one line that names the override, the key, and — for a wrong type — the value and
the type the key expects, e.g.::

    override trainer.max_steps=abc: trainer.max_steps expects int, got 'abc' (default 1000)
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Sequence, cast

from medkit.api.errors import ConfigError

#: What ``medkit run --resume RUN KEY=VALUE`` may change: the schedule's length and learning rate, how often it
#: checkpoints, logs and evaluates (and how much the evaluation keeps in memory: the same numbers), the loader's
#: workers, and how the encoder's blocks run (recomputed activations: the same gradients; compiled: the same to
#: float tolerance). Everything else would change what the finished stages already trained with (the model, the
#: data, the strategy).
SAFE_RESUME_OVERRIDES: tuple[str, ...] = (
    "optim.lr", "optim.min_lr", "trainer.max_steps", "trainer.checkpoint_every", "trainer.num_workers",
    "trainer.log_every", "trainer.eval_batches", "trainer.eval_cache_mb", "trainer.grad_checkpointing",
    "trainer.compile")
#: Where the applied resume overrides are recorded in the config handed to the engine.
RESUME_OVERRIDES_KEY = ("run", "resume_overrides")


def strip_targets(node: Any) -> Any:
    """A plain container without hydra-zen's ``_target_`` keys (components are built by name)."""
    if isinstance(node, dict):
        return {k: strip_targets(v) for k, v in node.items() if k != "_target_"}
    if isinstance(node, list):
        return [strip_targets(v) for v in node]
    return node


def split_override(item: str) -> tuple[str, str]:
    """``"+optim.lr=1e-4"`` → ``("optim.lr", "1e-4")``; refuses what is not ``KEY=VALUE``."""
    key, sep, value = item.partition("=")
    key = key.strip().lstrip("+")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. optim.lr=1e-4)")
    return key, value


def leaf_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every leaf key of an OmegaConf tree as a dotted path (``_target_`` left out)."""
    from omegaconf import OmegaConf

    out = []
    for k in cfg:
        if k == "_target_":
            continue
        full = f"{prefix}{k}"
        node = cfg._get_node(k)
        if OmegaConf.is_dict(node):
            out += leaf_keys(node, full + ".")
        else:
            out.append(full)
    return out


def expected_type(node: Any) -> str:
    """What an OmegaConf node accepts, in words: ``int``, ``float or null``, ``list of float``..."""
    from omegaconf import (AnyNode, BooleanNode, DictConfig, EnumNode, FloatNode, IntegerNode, ListConfig,
                           StringNode, UnionNode)

    names: dict[type, str] = {IntegerNode: "int", FloatNode: "float", BooleanNode: "bool (true/false)",
                              StringNode: "str", AnyNode: "any value", UnionNode: "bool (true/false) or str"}
    if isinstance(node, ListConfig):
        element = node._metadata.element_type
        what = f"list of {getattr(element, '__name__', 'values')}" if element not in (Any, None) else "list"
    elif isinstance(node, DictConfig):
        what = "mapping"
    elif isinstance(node, EnumNode):
        what = "one of " + ", ".join(m.name for m in node.enum_type)
    else:
        what = names.get(type(node), type(node).__name__)
    optional = node._is_optional() if hasattr(node, "_is_optional") else False
    return f"{what} or null" if optional and not what.startswith("any") else what


def _value_of(node: Any, label: str) -> str:
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node._value()
    except Exception:  # noqa: BLE001 - the value only decorates an error message
        return ""
    return f" ({label} {'null' if value is None else value})"


def apply_overrides(cfg: Any, overrides: Sequence[str], *, label: str = "default") -> Any:
    """Apply ``KEY=VALUE`` overrides to an OmegaConf tree in struct mode; returns the merged tree.

    An unknown key is refused with "did you mean", a value of the wrong type with the key, the value
    and the type the key expects (and the key's current value, shown as ``(<label> VALUE)``);
    ``run.*`` is set by the command-line options only.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for item in overrides:
        key, value = split_override(item)
        shown = f"{key}={value}"
        if key.startswith("run.") or key == "run":
            raise ConfigError(f"override {shown}: set run.* with the command-line options instead")
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if parent is None or not OmegaConf.is_dict(parent) or leaf not in parent or leaf == "_target_":
            choices = sorted(leaf_keys(cfg))
            if parent is not None and OmegaConf.is_dict(parent) and parent_key:
                near = [c for c in choices if c.startswith(parent_key + ".")]
                close = difflib.get_close_matches(key, near, n=1)
                hint = (f"; did you mean {close[0]}?" if close else
                        f"; {parent_key} has no keys" if not near else f"; {parent_key} has {', '.join(near)}")
            else:
                close = difflib.get_close_matches(key, choices, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"override {shown}: no config key {key!r}{hint} (see `medkit config show`)")
        node = parent._get_node(leaf)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{key}={value}"]))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {shown}: {key} expects {expected_type(node)}, got {value!r}"
                              f"{_value_of(node, label)}") from exc
    return cfg


def typed_sections(cfg: dict[str, Any], *, where: str = "") -> Any:
    """The ``trainer``/``optim``/``encoder`` sections of a plain config as typed OmegaConf nodes.

    Known keys are checked against the schemas (a wrong type is one line naming ``where``, the key and
    the value); keys the schemas do not know are kept as they are (older or newer medkit).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from medkit.config.schemas import SCHEMAS, field_names

    out = {}
    for section, schema in SCHEMAS.items():
        values = cfg.get(section)
        if values is None:
            continue
        node = OmegaConf.structured(schema)
        OmegaConf.set_struct(node, False)
        for key, value in values.items():
            if key in field_names(section):
                try:
                    node[key] = value
                except OmegaConfBaseException as exc:
                    raise ConfigError(f"{where}{section}.{key} expects {expected_type(node._get_node(key))}, "
                                      f"got {value!r}") from exc
            else:
                node[key] = value
        OmegaConf.set_struct(node, True)
        out[section] = node
    return OmegaConf.create(out)


def apply_resume_overrides(cfg: dict[str, Any], overrides: Sequence[str], *, source: str) -> dict[str, Any]:
    """Apply the safe ``--resume`` overrides (:data:`SAFE_RESUME_OVERRIDES`) to a loaded run config.

    The loaded ``trainer``/``optim``/``encoder`` sections are type-checked first (naming ``source``);
    each override is typed by its schema; the applied ones (``KEY=VALUE``, appended to any earlier
    ones) are recorded under ``cfg["run"]["resume_overrides"]`` for the manifest.

    Returns:
        a new config; ``cfg`` is not changed.
    """
    from omegaconf import OmegaConf

    from medkit.config.schemas import check_values

    where = f"{source}: "
    typed = typed_sections(cfg, where=where)
    check_values(cast(dict[str, Any], OmegaConf.to_container(typed)), where=where)
    out = copy.deepcopy(cfg)
    applied: list[str] = []
    for item in overrides:
        key, value = split_override(item)
        if key not in SAFE_RESUME_OVERRIDES:
            raise ConfigError(f"--resume {source}: {key} cannot change on resume (the finished steps used "
                              f"it); allowed: {', '.join(SAFE_RESUME_OVERRIDES)}")
        if "${" in value:
            raise ConfigError(f"--resume {source}: override {key}={value}: give a literal value, not an "
                              f"interpolation")
        section, leaf = key.split(".")
        if section not in typed:
            raise ConfigError(f"--resume {source}: the run's config has no {section} section to override")
        typed = apply_overrides(typed, [f"{key}={value}"], label="now")
        new = cast(dict[str, Any], OmegaConf.to_container(typed))[section][leaf]
        check_values({section: {leaf: new}})
        out[section][leaf] = new
        applied.append(f"{key}={'null' if new is None else new}")
    if applied:
        run = out.setdefault(RESUME_OVERRIDES_KEY[0], {})
        run[RESUME_OVERRIDES_KEY[1]] = list(run.get(RESUME_OVERRIDES_KEY[1]) or []) + applied
    return out
