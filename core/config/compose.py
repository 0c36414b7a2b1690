"""Composition of a run's config from medkit's isolated hydra-zen store, overrides and presets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from medkit.api.errors import ConfigError, PluginError
from medkit.config.overrides import apply_overrides, leaf_keys, strip_targets
from medkit.config.schemas import PRESET_DEFAULTS, SCHEMAS, check_values, defaults, section_defaults
from medkit.config.store import ConfigHost, component_config, get_store
from medkit.config.yaml import from_yaml, load_run_config, to_yaml

#: Old private names, kept for callers outside medkit.config (use the public ones).
_apply_overrides = apply_overrides
_strip_targets = strip_targets
_leaf_keys = leaf_keys
__all__ = ["ENCODER_DEFAULTS", "OPTIM_DEFAULTS", "PRESET_DEFAULTS", "TRAINER_DEFAULTS", "Selection",
           "apply_overrides", "component_config", "compose", "config_hash", "from_yaml", "get_store",
           "load_run_config", "parse_data", "parse_modalities", "strip_targets", "to_yaml"]

#: The sections' defaults as plain dicts (the schemas in :mod:`medkit.config.schemas` are the truth).
OPTIM_DEFAULTS: dict[str, Any] = defaults("optim")
TRAINER_DEFAULTS: dict[str, Any] = defaults("trainer")
ENCODER_DEFAULTS: dict[str, Any] = defaults("encoder")


@dataclass
class Selection:
    """What the user selected on the command line."""

    modalities: list[str]
    strategy: str
    preset: str = "base"
    data: dict[str, str | None] = field(default_factory=dict)
    seed: int = 0
    max_steps: int | None = None
    overrides: list[str] = field(default_factory=list)
    #: values of a config file (``run --config FILE``), merged before ``overrides``; ``base_source`` names it
    base: dict[str, Any] = field(default_factory=dict)
    base_source: str = ""


def parse_modalities(values: Sequence[str]) -> list[str]:
    """``("ct", "xray,mri")`` → ``["ct", "xray", "mri"]`` (order kept, duplicates refused)."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if part in out:
                raise ConfigError(f"modality {part!r} is selected twice; each modality is one stage")
            out.append(part)
    return out


def parse_data(values: Sequence[str], modalities: Sequence[str]) -> dict[str, str | None]:
    """``--data PATH`` (one modality) or ``--data M=PATH`` (repeatable) → per-modality paths."""
    data: dict[str, str | None] = {m: None for m in modalities}
    for value in values:
        key, sep, path = value.partition("=")
        if sep and key in data:
            data[key] = path
        elif sep and key and "/" not in key and not key.startswith("."):
            raise ConfigError(f"--data {value}: {key!r} is not a selected modality "
                              f"({', '.join(modalities)})")
        elif len(modalities) == 1:
            data[modalities[0]] = value
        else:
            raise ConfigError(f"--data {value}: with several modalities use --data MODALITY=PATH")
    return data


def compose(sel: Selection, *, host: ConfigHost) -> dict[str, Any]:
    """The resolved run config as a plain dict (no ``_target_``: components are always built
    through the registry by name).

    ``trainer``, ``optim`` and ``encoder`` are typed by :mod:`medkit.config.schemas`, the component
    sections by their factories' signatures: an unknown key or a value of the wrong type is a
    :class:`ConfigError` of one line, raised before anything is written.

    Args:
        sel: what the command line selected.
        host: the plugin host the caller built (the CLI: ``medkit.registry.get_host()``).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from medkit.models.encoder import PRESETS

    if sel.preset not in PRESETS:
        raise ConfigError(f"unknown preset {sel.preset!r}; choose one of {', '.join(PRESETS)}")
    if not sel.modalities:
        raise ConfigError("select at least one modality with --modality")
    for m, path in sel.data.items():
        if path and "${" in str(path):
            raise ConfigError(f"--data {m}={path}: a data path may not hold '${{' (medkit resolves no "
                              f"interpolation in paths); give the folder itself")
    host.require_run(sel.modalities, sel.strategy)  # every missing plugin in one message
    sections = section_defaults(sel.preset)
    if sel.max_steps is not None:
        sections["trainer"]["max_steps"] = int(sel.max_steps)
    typed = {name: OmegaConf.structured(SCHEMAS[name](**values)) for name, values in sections.items()}

    modality_cfg: dict[str, Any] = {}
    tokenizer_cfg: dict[str, Any] = {}
    objective_cfg: dict[str, Any] = {}
    uses: dict[str, dict[str, str]] = {}
    for m in sel.modalities:
        spec = host.spec("modality", m)
        modality_cfg[m] = OmegaConf.structured(component_config("modality", m, host))
        tok = spec.meta.get("default_tokenizer")
        obj = spec.meta.get("default_objective")
        if not tok or not obj:
            raise PluginError(f"modality {m!r} ({host.provider('modality', m).dist}) declares no "
                              f"default_tokenizer/default_objective in its spec meta")
        uses[m] = {"tokenizer": tok, "objective": obj}
        if tok not in tokenizer_cfg:
            tokenizer_cfg[tok] = OmegaConf.structured(component_config("tokenizer", tok, host))
        if obj not in objective_cfg:
            objective_cfg[obj] = OmegaConf.structured(component_config("objective", obj, host))
    strategy_node = OmegaConf.structured(component_config("strategy", sel.strategy, host))

    cfg = OmegaConf.create({
        "run": {"modalities": list(sel.modalities), "strategy": sel.strategy, "seed": int(sel.seed),
                "data": dict(sel.data), "uses": uses},
    })
    for name in ("encoder", "optim", "trainer"):
        cfg[name] = typed[name]
    cfg.strategy = strategy_node
    cfg.modality = modality_cfg
    cfg.tokenizer = tokenizer_cfg
    cfg.objective = objective_cfg
    OmegaConf.set_struct(cfg, True)
    if sel.base:
        from medkit.config.from_file import merge_file_values

        cfg = merge_file_values(cfg, sel.base, sel.base_source)
    from medkit.models.sharing import refuse_decoders_elsewhere

    refuse_decoders_elsewhere(sel.strategy, strategy_node, sel.overrides)  # a clearer word than "no key"
    cfg = apply_overrides(cfg, sel.overrides)
    try:
        plain = strip_targets(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"overrides {' '.join(sel.overrides)}: {str(exc).splitlines()[0]}") from exc
    check_values(plain)
    return plain


def config_hash(cfg: dict[str, Any]) -> str:
    """A stable hash of the config (what a resume must match)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
