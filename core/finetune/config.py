"""The config of a fine-tuning run: defaults, named recipes (supplement Table 1), the
pre-trained run's architecture, and ``KEY=VALUE`` overrides."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from medkit.api.errors import ConfigError
from medkit.config.store import ConfigHost

log = logging.getLogger(__name__)


@dataclass
class FinetuneOptimConfig:
    """``optim.*`` of a fine-tune: AdamW, weight decay 1e-4 on every parameter, default betas, poly
    decay (power 0.9), clip 12."""

    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: Optional[float] = 12.0  #: max gradient norm; ``null`` or 0: no clipping
    poly_power: float = 0.9


@dataclass
class FinetuneTrainerConfig:
    """``trainer.*`` of a fine-tune: the loop, validation, checkpoints and evaluation batches."""

    max_steps: int = 1000
    batch_size: int = 8
    eval_batch_size: Optional[int] = None  #: ``null``: the task's, else ``batch_size``
    val_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    num_workers: int = 0
    device: str = "auto"
    max_eval_samples: Optional[int] = None  #: ``null``: every sample of the split
    # fine-tuning data that a --from run pre-trained on: refuse val/test sources it trained on
    allow_pretraining_overlap: bool = False


@dataclass
class FinetuneBackboneConfig:
    """``backbone.*`` of a fine-tune: ``medkit`` (a pre-trained run's encoder) or an external model."""

    name: str = "medkit"
    pretrained: bool = False
    features: int = 256  #: output features of a classification backbone
    in_chans: Optional[int] = None  #: ``null``: 3 for 2D data, 1 otherwise


#: The sections' defaults as plain dicts (the dataclasses above are the one place they live).
FT_OPTIM: dict[str, Any] = asdict(FinetuneOptimConfig())
FT_TRAINER: dict[str, Any] = asdict(FinetuneTrainerConfig())
FT_BACKBONE: dict[str, Any] = asdict(FinetuneBackboneConfig())


@dataclass(frozen=True)
class FinetuneSettings:
    """The typed sections of one fine-tuning config, built once (what the fine-tuning code reads)."""

    trainer: FinetuneTrainerConfig
    optim: FinetuneOptimConfig
    backbone: FinetuneBackboneConfig

    @classmethod
    def of(cls, cfg: dict[str, Any], *, where: str = "") -> FinetuneSettings:
        """The sections of ``cfg`` (absent keys: the defaults above; a wrong type: :class:`ConfigError`)."""
        from medkit.config.typed import typed_section

        return cls(trainer=typed_section(cfg.get("trainer"), FinetuneTrainerConfig, section="trainer", where=where),
                   optim=typed_section(cfg.get("optim"), FinetuneOptimConfig, section="optim", where=where),
                   backbone=typed_section(cfg.get("backbone"), FinetuneBackboneConfig, section="backbone",
                                          where=where))
RECIPE_GROUP = "recipe"
#: Recipe field → where it lands in the fine-tuning config.
RECIPE_TARGETS: dict[str, str] = {"lr": "optim.lr", "batch_size": "trainer.batch_size",
                                  "iterations": "trainer.max_steps"}


@dataclass
class FinetuneSelection:
    """What ``medkit finetune`` was asked for on the command line."""

    task: str | None = None
    modality: str | None = None
    data: str | None = None
    source: str | None = None  # --from: a run directory or hf-hub:ID
    scratch: bool = False
    recipe: str | None = None
    backbone: str = "medkit"
    preset: str | None = None
    max_steps: int | None = None
    seed: int = 0
    overrides: list[str] = field(default_factory=list)


def recipe_names(host: ConfigHost) -> list[str]:
    from medkit.config.compose import get_store

    return sorted({e["name"] for e in get_store(host) if e["group"] == RECIPE_GROUP})


def load_recipe(name: str, host: ConfigHost) -> dict[str, Any]:
    """A recipe registered by a task plugin (``medkit_register_configs``) as a plain dict."""
    import difflib

    from omegaconf import OmegaConf

    from medkit.config.compose import _strip_targets, get_store

    store = get_store(host)
    if (RECIPE_GROUP, name) not in store:
        known = recipe_names(host)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown recipe {name!r}{hint} known recipes: {', '.join(known) or 'none'} "
                          f"(they come from medkit-plugin-classification and medkit-plugin-segmentation)")
    return _strip_targets(OmegaConf.to_container(OmegaConf.structured(store[RECIPE_GROUP, name]), resolve=True))


def component_defaults(kind: str, name: str, host: ConfigHost) -> dict[str, Any]:
    """Every config field of a registered component with its default value."""
    from omegaconf import OmegaConf

    from medkit.config.compose import _strip_targets, component_config

    return _strip_targets(OmegaConf.to_container(OmegaConf.structured(component_config(kind, name, host)),
                                                 resolve=True))


#: the modality of the demo data when nothing names one (no --modality, --recipe, --from or --data)
DEMO_MODALITY = "xray"


def _infer_modality(sel: FinetuneSelection) -> str:
    """The modality nothing named: the only one of the ``--from`` run, or (demo data) ``xray``."""
    if sel.source and sel.backbone == "medkit":
        from medkit.finetune.backbones import pretrain_config, resolve_source

        run_cfg = pretrain_config(resolve_source(sel.source))
        mods = list(run_cfg.get("run", {}).get("modalities") or run_cfg.get("run", {}).get("uses") or [])
        if len(mods) == 1:
            log.info("--modality %s: the only modality of --from %s", mods[0], sel.source)
            return str(mods[0])
        if mods:
            raise ConfigError(f"--from {sel.source} was pre-trained on {', '.join(mods)}: choose the data's "
                              f"modality with --modality")
    if not sel.data and not sel.source:
        log.info("no --modality and no --data: the %s demo data (choose another with --modality)",
                 DEMO_MODALITY)
        return DEMO_MODALITY
    raise ConfigError("choose the data's modality with --modality (report, xray, ct, mri, pathology) "
                      "or a --recipe")


def _encoder_section(sel: FinetuneSelection, tokenizer: str, host: ConfigHost, *, require_source: bool
                     ) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(encoder, tokenizer config, resolved --from) of the selection."""
    from medkit.config.compose import ENCODER_DEFAULTS
    from medkit.finetune.backbones import pretrain_config, resolve_source

    if sel.backbone != "medkit":
        if sel.source:
            raise ConfigError(f"--from {sel.source} loads a medkit encoder; drop it with --backbone "
                              f"{sel.backbone} (external backbones are built by their library)")
        return {}, {}, None
    if sel.source and sel.scratch:
        raise ConfigError("choose one of --from RUN_DIR (a pre-trained run) and --scratch")
    if sel.source:
        run_dir = resolve_source(sel.source)
        run_cfg = pretrain_config(run_dir)
        tok_cfg = run_cfg.get("tokenizer", {}).get(tokenizer)
        if tok_cfg is None:
            tok_cfg = component_defaults("tokenizer", tokenizer, host)
        return dict(run_cfg["encoder"]), {tokenizer: dict(tok_cfg)}, str(run_dir.resolve())
    if not sel.scratch and require_source:
        raise ConfigError("give --from RUN_DIR (a pre-trained medkit run or hf-hub:ID), --scratch (random "
                          "init of the same architecture) or --backbone timm:NAME / monai:NAME / a released "
                          "model such as desd:PATH")
    encoder = dict(ENCODER_DEFAULTS, preset=sel.preset or "base")
    return encoder, {tokenizer: component_defaults("tokenizer", tokenizer, host)}, None


def _external_backbone(sel: FinetuneSelection, recipe: dict[str, Any], modality: str, dims: int,
                       host: Any) -> str:
    """``sel.backbone`` with a released model's path made absolute, after the supplement's "×" check:
    a model that cannot take the data's dimension is a one-line error naming both."""
    from medkit.finetune.external import check_dims, normalize_spec, parse_spec

    parsed = parse_spec(sel.backbone, host)
    if parsed is None:
        return sel.backbone
    dataset = str(recipe.get("dataset") or "").split(" (")[0]
    if "->" in dataset:  # NCH's "NCT-CRC-HE-100K -> CRC-VAL-HE-7K": the paper's column name
        dataset = str(sel.recipe).upper()
    dataset = dataset or f"the {modality} data"
    check_dims(parsed[0], dims, dataset, host)
    return normalize_spec(sel.backbone, host)


def _recipe_into(cfg: dict[str, Any], recipe: dict[str, Any], tokenizer: str) -> None:
    """Copy the recipe's values onto the sections they configure (only fields the task knows)."""
    for key, target in RECIPE_TARGETS.items():
        if recipe.get(key) is not None:
            section, leaf = target.split(".")
            cfg[section][leaf] = recipe[key]
    task_cfg = cfg["task"]
    size = recipe.get("input_size")
    if size is not None:
        if int(cfg["run"]["dims"]) == 1:
            if tokenizer in cfg["tokenizer"] and "max_length" in cfg["tokenizer"][tokenizer]:
                cfg["tokenizer"][tokenizer]["max_length"] = int(size[0] if isinstance(size, list) else size)
        else:
            for key in ("input_size", "patch_size"):
                if key in task_cfg:
                    task_cfg[key] = list(size)
    for key, value in (recipe.get("task_options") or {}).items():
        if key not in task_cfg:
            raise ConfigError(f"recipe {recipe.get('name')!r}: task option {key!r} is not a field of task "
                              f"{cfg['run']['task']!r} ({', '.join(task_cfg)})")
        task_cfg[key] = value


def compose_finetune(sel: FinetuneSelection, *, host: Any, require_source: bool = True) -> dict[str, Any]:
    """The resolved fine-tuning config as a plain dict (``host``: the plugin host the caller built).

    Order: built-in defaults → the recipe (task, modality, input size, lr, batch size, iterations,
    task options) → the pre-trained run's encoder and tokenizer config → ``--max-steps`` →
    ``KEY=VALUE`` overrides.
    """
    from omegaconf import OmegaConf

    from medkit.config.compose import _apply_overrides, _strip_targets
    from medkit.finetune.backbones import modality_info

    recipe = load_recipe(sel.recipe, host) if sel.recipe else {}
    task = sel.task or recipe.get("task")
    if recipe and sel.task and recipe.get("task") != sel.task:
        raise ConfigError(f"recipe {sel.recipe!r} is a {recipe.get('task')} recipe, but --task {sel.task} "
                          f"was given; drop --task or choose another recipe")
    if not task:
        raise ConfigError("choose a task with --task classification|segmentation (or a --recipe)")
    modality = sel.modality or recipe.get("modality") or _infer_modality(sel)
    dims, tokenizer = modality_info(modality, host)
    backbone = _external_backbone(sel, recipe, modality, dims, host)
    encoder, tok_cfg, source = _encoder_section(sel, tokenizer, host, require_source=require_source)
    task_cfg = component_defaults("task", task, host)
    trainer = dict(FT_TRAINER)
    if encoder.get("preset") == "tiny":
        trainer["batch_size"] = 4
    cfg: dict[str, Any] = {
        "run": {"task": task, "modality": modality, "dims": dims, "tokenizer": tokenizer,
                "data": sel.data, "from": source, "scratch": bool(sel.scratch), "recipe": sel.recipe,
                "seed": int(sel.seed)},
        "backbone": dict(FT_BACKBONE, name=backbone), "encoder": encoder, "tokenizer": tok_cfg,
        "task": task_cfg, "optim": dict(FT_OPTIM), "trainer": trainer,
    }
    if recipe:
        _recipe_into(cfg, recipe, tokenizer)
    if sel.max_steps is not None:
        cfg["trainer"]["max_steps"] = int(sel.max_steps)
    node = OmegaConf.create(cfg)
    OmegaConf.set_struct(node, True)
    node = _apply_overrides(node, list(sel.overrides))
    out = _strip_targets(OmegaConf.to_container(node, resolve=True))
    fusion = out["task"].get("fusion")
    if isinstance(fusion, str) and ":" in fusion:
        from medkit.finetune.external import normalize_spec

        out["task"]["fusion"] = normalize_spec(fusion, host)
    typed = FinetuneSettings.of(out).trainer  # every value of its field's type (one line naming the key)
    for key in ("max_steps", "batch_size", "val_every", "checkpoint_every"):
        if int(getattr(typed, key)) < 1:
            raise ConfigError(f"trainer.{key} must be >= 1, got {out['trainer'][key]}")
    return out


def describe_recipe(name: str, host: ConfigHost) -> str:
    """The recipe's values, one ``key: value`` per line (``medkit finetune --recipe R --show``)."""
    recipe = load_recipe(name, host)
    width = max(len(k) for k in recipe)
    lines = [f"recipe {name}"]
    for key, value in recipe.items():
        lines.append(f"  {key.ljust(width)}  {value}")
    return "\n".join(lines)


def resolve_data(cfg: dict[str, Any], task: Any, override: str | None = None) -> Path:
    """The data folder: ``override``, ``run.data`` or the task's demo data (logged)."""
    from medkit.data.demo import demo_root

    given = override or cfg["run"].get("data")
    if given:
        path = Path(given).expanduser()
        if not path.exists():
            raise ConfigError(f"--data {given}: {path} does not exist")
        return path.resolve()
    root = demo_root() / f"finetune-{cfg['run']['task']}-{cfg['run']['dims']}d"
    path = Path(task.demo_data(root))
    log.info("no --data given: using the %s task's built-in %dD demo data at %s", cfg["run"]["task"],
             cfg["run"]["dims"], path)
    return path
