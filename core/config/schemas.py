"""Typed schemas of the ``trainer``, ``optim`` and ``encoder`` sections of a pre-training run config.

Every key the engine, the model builder and the evaluation read from these sections is a field here,
with its default (for the optimiser, MedCoSS's). ``compose`` builds the sections from these dataclasses
(OmegaConf structured configs), so an override of the wrong type or an unknown key is refused before
anything is written; :func:`check_values` adds the range rules a type cannot say.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, List, Optional, Union

from medkit.models.options import EncoderConfig  # the model's own schema, typed here with the others
from medkit.api.errors import ConfigError
from medkit.config.probes import PROBE_TRAINER_DEFAULTS as _PROBE


@dataclass
class TrainerConfig:
    """``trainer.*``: the loop, checkpoints, held-out evaluation and the frozen-encoder probes."""

    max_steps: int = 1000  #: optimizer steps per stage
    batch_size: int = 8  #: samples per step and rank
    checkpoint_every: int = 50  #: steps between mid-stage checkpoints
    keep_checkpoints: int = 2  #: committed checkpoint generations kept (the older ones are fallbacks)
    accum_steps: int = 1  #: micro-batches each step's batch_size samples are split into (accumulation)
    #: gradient reduction: ``allreduce`` (DDP's bucketed all-reduce: fast, but the bits depend on the
    #: number of processes) or ``ordered`` (fixed groups summed by one fixed tree: the same bits on any
    #: number of processes, at a cost that falls with the group size; trainer.accum_steps then cuts
    #: each step into micro-batches of whole groups); see medkit.engine.ordered and docs/checkpoints.md
    reduce: str = "allreduce"
    #: samples per reduction group under ``reduce=ordered``; 0: the global batch (with accum_steps:
    #: a micro-batch of it) over the largest power of two up to 8 that divides it
    reduce_group: int = 0
    log_every: int = 10  #: steps between progress lines
    eval_batches: int = 4  #: held-out batches per modality for the pretext loss after each stage
    val_fraction: float = 0.1  #: share of each modality's samples held out (hash split)
    #: CSV column naming each file's patient for the held-out split; null: patient_id, PatientID, ...
    patient_column: Optional[str] = None
    #: folder level naming the patient for the held-out split (0 = first); null: not used
    group_folder_level: Optional[int] = None
    #: DataLoader worker processes per rank; ``auto``: min(8, CPUs per rank - 1) (medkit.engine.workers)
    num_workers: Union[int, str] = "auto"
    device: str = "auto"  #: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``
    amp: Union[bool, str] = False  #: autocast precision (CPU and CUDA): false (fp32) or bf16 (true = bf16)
    grad_checkpointing: bool = False  #: recompute each encoder block's activations in backward (less memory)
    compile: Union[bool, str] = False  #: torch.compile the encoder's blocks: true (inductor) or a backend name
    # frozen-encoder probes after each stage (0 steps and k=0 turn them off); probe_unseen also
    # probes modalities before their own stage, which forward transfer needs. Defaults: the one
    # place, medkit.eval.probes.ProbeOptions (a test checks that every one of its keys is here)
    probe_knn_k: int = _PROBE["probe_knn_k"]
    probe_linear_steps: int = _PROBE["probe_linear_steps"]
    probe_knn_vote: str = _PROBE["probe_knn_vote"]  #: ``weighted`` (DINO's) or ``majority``
    probe_unseen: bool = _PROBE["probe_unseen"]
    probe_max_train: int = _PROBE["probe_max_train"]
    probe_max_query: int = _PROBE["probe_max_query"]
    probe_refit_steps: int = _PROBE["probe_refit_steps"]  #: steps of the fresh head behind refit_loss (0: off)
    probe_refit_lr: float = _PROBE["probe_refit_lr"]
    #: MiB of un-augmented samples the evaluation keeps across stages, so probes and refitted decoders
    #: decode each file once per run (0: none; the results are the same either way)
    eval_cache_mb: int = 0


@dataclass
class OptimConfig:
    """``optim.*``: AdamW(0.9, 0.95), wd 0.05, lr = blr * global batch / 256, warm-up 40/300."""

    lr: Optional[float] = None  #: absolute learning rate; ``null``: blr * global batch / 256
    blr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_fraction: float = 40 / 300
    min_lr: float = 0.0
    clip_grad: Optional[float] = None  #: max gradient norm; ``null`` or 0: no clipping


#: section name → its schema.
SCHEMAS: dict[str, type] = {"trainer": TrainerConfig, "optim": OptimConfig, "encoder": EncoderConfig}

#: Per-preset defaults that differ from the paper's ViT-B settings (tiny models are smoke tests).
PRESET_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {"optim": {"lr": 1e-3}, "trainer": {"batch_size": 8, "probe_refit_steps": 10}},
    "small": {"trainer": {"batch_size": 32}},
    "base": {"trainer": {"batch_size": 128}},
}

#: Range rules: key → (lowest, highest, whether ``highest`` itself is allowed); ``None``: unbounded.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "trainer.max_steps": (0, None, True), "trainer.batch_size": (1, None, True),
    "trainer.checkpoint_every": (1, None, True), "trainer.log_every": (1, None, True),
    "trainer.keep_checkpoints": (1, None, True), "trainer.accum_steps": (1, None, True),
    "trainer.eval_batches": (0, None, True), "trainer.val_fraction": (0, 1, False),
    "trainer.num_workers": (0, None, True), "trainer.probe_knn_k": (0, None, True),
    "trainer.group_folder_level": (0, None, True), "trainer.reduce_group": (0, None, True),
    "trainer.probe_linear_steps": (0, None, True), "trainer.probe_max_train": (0, None, True),
    "trainer.probe_max_query": (0, None, True), "trainer.probe_refit_steps": (0, None, True),
    "trainer.probe_refit_lr": (0, None, True), "trainer.eval_cache_mb": (0, None, True),
    "optim.lr": (0, None, True), "optim.blr": (0, None, True), "optim.weight_decay": (0, None, True),
    "optim.warmup_fraction": (0, 1, True), "optim.min_lr": (0, None, True), "optim.clip_grad": (0, None, True),
    "encoder.depth": (1, None, True), "encoder.embed_dim": (1, None, True), "encoder.num_heads": (1, None, True),
    "encoder.mlp_ratio": (0, None, True), "encoder.drop_path": (0, 1, False),
}
_CHOICES: dict[str, tuple[str, ...]] = {"trainer.probe_knn_vote": ("weighted", "majority"),
                                        "trainer.reduce": ("ordered", "allreduce")}


def defaults(section: str) -> dict[str, Any]:
    """The schema defaults of ``section`` as a plain dict (a fresh copy)."""
    return asdict(SCHEMAS[section]())


def field_names(section: str) -> list[str]:
    return [f.name for f in fields(SCHEMAS[section])]


def section_defaults(preset: str) -> dict[str, dict[str, Any]]:
    """``{"trainer", "optim", "encoder"}`` defaults for ``preset`` (its batch size, tiny's lr)."""
    out = {name: defaults(name) for name in SCHEMAS}
    for name, values in PRESET_DEFAULTS.get(preset, {}).items():
        out[name].update(values)
    out["encoder"]["preset"] = preset
    return out


def check_values(cfg: dict[str, Any], *, where: str = "") -> None:
    """Refuse out-of-range values in the typed sections of a plain config (one line naming the key).

    Args:
        cfg: a config with (some of) the ``trainer``, ``optim`` and ``encoder`` sections.
        where: a prefix for the message (the file a config came from), e.g. ``"runs/a/config.yaml: "``.
    """
    from medkit.models.encoder import PRESETS

    preset = (cfg.get("encoder") or {}).get("preset")
    if "encoder" in cfg and preset not in PRESETS:
        raise ConfigError(f"{where}encoder.preset={preset}: unknown preset; choose one of {', '.join(PRESETS)}")
    for key, (low, high, high_ok) in _RANGES.items():
        section, leaf = key.split(".")
        value = (cfg.get(section) or {}).get(leaf)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if low is not None and value < low:
            raise ConfigError(f"{where}{key}={value}: must be at least {low:g}")
        if high is not None and (value > high or (value == high and not high_ok)):
            bound = f"at most {high:g}" if high_ok else f"below {high:g}"
            raise ConfigError(f"{where}{key}={value}: must be {bound}")
    for key, choices in _CHOICES.items():
        section, leaf = key.split(".")
        value = (cfg.get(section) or {}).get(leaf)
        if value is not None and value not in choices:
            raise ConfigError(f"{where}{key}={value}: choose one of {', '.join(choices)}")
    workers = (cfg.get("trainer") or {}).get("num_workers")
    if isinstance(workers, str) and workers.strip().lower() != "auto":
        raise ConfigError(f"{where}trainer.num_workers={workers}: expected an integer >= 0 or auto")
    backend = (cfg.get("trainer") or {}).get("compile")
    if backend is not None and backend is not False:
        from medkit.models.build import compile_backend

        compile_backend(backend, where=where)
    amp = (cfg.get("trainer") or {}).get("amp")
    if amp is not None and amp is not False:
        from medkit.models.precision import amp_dtype

        amp_dtype(amp, where=where)
    betas = (cfg.get("optim") or {}).get("betas")
    if betas is not None and (len(betas) != 2 or not all(0 <= float(b) < 1 for b in betas)):
        raise ConfigError(f"{where}optim.betas={list(betas)}: give two values in [0, 1), e.g. [0.9,0.95]")
