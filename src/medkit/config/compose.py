"""Composition of a run's config from medkit's isolated hydra-zen store, overrides and presets."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from medkit.api.errors import ConfigError, PluginError
from medkit.eval.probes import PROBE_TRAINER_DEFAULTS

#: Optimiser defaults (spec §4): AdamW(0.9, 0.95), wd 0.05, lr = blr * batch / 256, warm-up 40/300.
OPTIM_DEFAULTS: dict[str, Any] = {
    "lr": None, "blr": 1.5e-4, "weight_decay": 0.05, "betas": [0.9, 0.95],
    "warmup_fraction": 40 / 300, "min_lr": 0.0, "clip_grad": None,
}
#: Per-preset defaults that differ from the paper's ViT-B settings (tiny models are smoke tests).
PRESET_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {"optim": {"lr": 1e-3}, "trainer": {"batch_size": 8}},
    "small": {"trainer": {"batch_size": 32}},
    "base": {"trainer": {"batch_size": 128}},
}
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_steps": 1000, "batch_size": 8, "checkpoint_every": 50, "log_every": 10, "accum_steps": 1,
    "keep_checkpoints": 2,
    "eval_batches": 4, "val_fraction": 0.1, "num_workers": 0, "device": "auto", "amp": False,
    # frozen-encoder probes after each stage (0 steps and k=0 turn them off); probe_unseen also
    # probes modalities before their own stage, which forward transfer needs. Defaults: eval.probes
    **PROBE_TRAINER_DEFAULTS,
}
ENCODER_DEFAULTS: dict[str, Any] = {
    "preset": "base", "depth": None, "embed_dim": None, "num_heads": None, "mlp_ratio": None,
    "drop_path": 0.1, "layer_scale_init": 1e-3, "final_norm": False,
    # the reference's numerics, to use the official weights (spec §10.1; medkit convert medcoss)
    "legacy": False,
}
_STORE: Any = None


def get_store() -> Any:
    """medkit's isolated :class:`hydra_zen.ZenStore` (never merged into Hydra's global store),
    with plugin-provided configs (``medkit_register_configs``) added on first use."""
    global _STORE
    if _STORE is None:
        from hydra_zen import ZenStore

        from medkit.registry import get_host

        _STORE = ZenStore(name="medkit", deferred_to_config=False, overwrite_ok=True)
        get_host().call_guarded("medkit_register_configs", store=_STORE)
    return _STORE


def component_config(kind: str, name: str) -> Any:
    """The hydra-zen ``builds`` of a component's factory (every user parameter, with defaults),
    stored in the isolated store under group ``kind``."""
    from hydra_zen import builds

    from medkit.registry import get_host

    store = get_store()
    if (kind, name) in store:
        return store[kind, name]
    host = get_host()
    spec = host.spec(kind, name)
    try:
        factory = spec.load_factory()
        cfg = builds(factory, populate_full_signature=True, zen_exclude=tuple(spec.context))
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001
        dist = host.provider(kind, name).dist
        raise PluginError(f"{kind} {name!r} from {dist}: cannot build its config from factory "
                          f"{spec.factory!r}: {exc}") from exc
    store(cfg, group=kind, name=name)
    return cfg


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


def _strip_targets(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_targets(v) for k, v in node.items() if k != "_target_"}
    if isinstance(node, list):
        return [_strip_targets(v) for v in node]
    return node


def _apply_overrides(cfg: Any, overrides: Sequence[str]) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. optim.lr=1e-4)")
        key = key.lstrip("+")
        if key.startswith("run.") or key == "run":
            raise ConfigError(f"override {item!r}: set run.* with the command-line options instead")
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if parent is None or not OmegaConf.is_dict(parent) or leaf not in parent:
            choices = sorted(_leaf_keys(cfg))
            close = difflib.get_close_matches(key, choices, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"override {item!r}: no config key {key!r}{hint} "
                              f"(see `medkit config show`)")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{key}={item.partition('=')[2]}"]))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {item!r}: {str(exc).splitlines()[0]}") from exc
    return cfg


def _leaf_keys(cfg: Any, prefix: str = "") -> list[str]:
    from omegaconf import OmegaConf

    out = []
    for k in cfg:
        v = cfg[k]
        full = f"{prefix}{k}"
        if OmegaConf.is_dict(v):
            out += _leaf_keys(v, full + ".")
        else:
            out.append(full)
    return out


def compose(sel: Selection) -> dict[str, Any]:
    """The resolved run config as a plain dict (no ``_target_``: components are always built
    through the registry by name)."""
    from omegaconf import OmegaConf

    from medkit.models.encoder import PRESETS
    from medkit.registry import get_host

    if sel.preset not in PRESETS:
        raise ConfigError(f"unknown preset {sel.preset!r}; choose one of {', '.join(PRESETS)}")
    if not sel.modalities:
        raise ConfigError("select at least one modality with --modality")
    host = get_host()
    host.require_run(sel.modalities, sel.strategy)  # every missing plugin in one message
    trainer = dict(TRAINER_DEFAULTS)
    optim = dict(OPTIM_DEFAULTS)
    trainer.update(PRESET_DEFAULTS[sel.preset].get("trainer", {}))
    optim.update(PRESET_DEFAULTS[sel.preset].get("optim", {}))
    if sel.max_steps is not None:
        trainer["max_steps"] = int(sel.max_steps)
    encoder = dict(ENCODER_DEFAULTS, preset=sel.preset)

    modality_cfg: dict[str, Any] = {}
    tokenizer_cfg: dict[str, Any] = {}
    objective_cfg: dict[str, Any] = {}
    uses: dict[str, dict[str, str]] = {}
    for m in sel.modalities:
        spec = host.spec("modality", m)
        modality_cfg[m] = OmegaConf.structured(component_config("modality", m))
        tok = spec.meta.get("default_tokenizer")
        obj = spec.meta.get("default_objective")
        if not tok or not obj:
            raise PluginError(f"modality {m!r} ({host.provider('modality', m).dist}) declares no "
                              f"default_tokenizer/default_objective in its spec meta")
        uses[m] = {"tokenizer": tok, "objective": obj}
        if tok not in tokenizer_cfg:
            tokenizer_cfg[tok] = OmegaConf.structured(component_config("tokenizer", tok))
        if obj not in objective_cfg:
            objective_cfg[obj] = OmegaConf.structured(component_config("objective", obj))
    strategy_node = OmegaConf.structured(component_config("strategy", sel.strategy))

    cfg = OmegaConf.create({
        "run": {"modalities": list(sel.modalities), "strategy": sel.strategy, "seed": int(sel.seed),
                "data": dict(sel.data), "uses": uses},
        "encoder": encoder, "optim": optim, "trainer": trainer,
    })
    cfg.strategy = strategy_node
    cfg.modality = modality_cfg
    cfg.tokenizer = tokenizer_cfg
    cfg.objective = objective_cfg
    OmegaConf.set_struct(cfg, True)
    cfg = _apply_overrides(cfg, sel.overrides)
    plain = _strip_targets(OmegaConf.to_container(cfg, resolve=True))
    return plain


def to_yaml(cfg: dict[str, Any]) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(cfg))


def from_yaml(text: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.create(text), resolve=True)  # type: ignore[return-value]


def config_hash(cfg: dict[str, Any]) -> str:
    """A stable hash of the config (what a resume must match)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
