"""Build the encoder, tokenizers and pretext heads of a run from its config, and save/load them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from medkit.storage.files import (atomic_link, atomic_write_json, load_state_checked, load_tensors,
                                     save_tensors)
from medkit.models.encoder import UniversalEncoder, compiled_block_call, resolve_trunk
from medkit.models.options import encoder_options
from medkit.models.sharing import SHARED_KEY, drop_aliases, expand_aliases, shared_heads
from medkit.api.components import Create
from medkit.api.errors import ConfigError

if TYPE_CHECKING:  # the typed trainer section (the config layer sits above the models)
    from medkit.config.schemas import TrainerConfig

log = logging.getLogger(__name__)
TOKENIZER_ASSETS = "tokenizers"
MODEL_METADATA = {"format": "medkit-1"}


@dataclass
class Model:
    """Everything ``model.safetensors`` holds."""

    encoder: UniversalEncoder
    heads: nn.ModuleDict  # modality -> objective module
    tokenizer_of: dict[str, str]
    objective_of: dict[str, str]
    #: ``{alias: owner}``: modalities whose head *is* another modality's (one module, one set of
    #: parameters); empty with one head per modality
    shared: dict[str, str] = field(default_factory=dict)

    def modules(self) -> nn.ModuleDict:
        return nn.ModuleDict({"encoder": self.encoder, "heads": self.heads})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What ``model.safetensors`` holds: a shared head once, under its owner's name."""
        return drop_aliases(self.modules().state_dict(), self.shared)

    def full_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` (as :meth:`state_dict` writes it) with every shared head's other names filled in,
        as ``modules().load_state_dict`` expects."""
        return expand_aliases(state, self.shared)


def trunk_shape(cfg: dict[str, Any]) -> dict[str, Any]:
    enc_cfg = encoder_options(cfg)
    return resolve_trunk(enc_cfg.preset, depth=enc_cfg.depth, embed_dim=enc_cfg.embed_dim,
                         num_heads=enc_cfg.num_heads, mlp_ratio=enc_cfg.mlp_ratio)


def build_model(cfg: dict[str, Any], *, create: Create, modalities: Sequence[str] | None = None,
                assets_dir: Path | None = None, with_heads: bool = True) -> Model:
    """Create tokenizers, the encoder and one pretext head per modality by their registered names.

    Args:
        cfg: a composed run config (:func:`medkit.config.compose.compose`).
        create: builds a registered component (``PluginHost.create``).
        modalities: the modalities to build for (default: all of ``cfg["run"]["uses"]``).
        assets_dir: a run directory whose ``tokenizers/<name>/`` assets (vocabularies) are reused.
        with_heads: build the pretext heads too.
    """
    uses: dict[str, dict[str, str]] = cfg["run"]["uses"]
    modalities = list(modalities if modalities is not None else uses)
    shape = trunk_shape(cfg)
    enc_cfg = encoder_options(cfg)
    legacy = bool(enc_cfg.legacy)
    tokenizers: dict[str, nn.Module] = {}
    for m in modalities:
        name = uses[m]["tokenizer"]
        if name in tokenizers:
            continue
        params = dict(cfg["tokenizer"].get(name, {}))
        if legacy:  # the reference numerics need every tokenizer in its legacy mode
            if "legacy" not in params:
                raise ConfigError(f"encoder.legacy=true needs tokenizers with a legacy mode; tokenizer {name!r} "
                                  f"(modality {m}) has none; set encoder.legacy=false")
            params["legacy"] = True
        if assets_dir is not None and "vocab_file" in params:
            # a run's own copy of its vocabulary wins: the file the config named may be gone
            candidate = Path(assets_dir) / TOKENIZER_ASSETS / name / "tokenizer.json"
            if candidate.exists():
                params["vocab_file"] = str(candidate)
        tokenizers[name] = create("tokenizer", name, embed_dim=shape["embed_dim"], **params)
    encoder = UniversalEncoder(tokenizers, **shape, drop_path=enc_cfg.drop_path,
                               layer_scale_init=enc_cfg.layer_scale_init, final_norm=bool(enc_cfg.final_norm),
                               legacy=legacy)
    heads = nn.ModuleDict()
    shared = {a: o for a, o in shared_heads(cfg).items() if a in modalities and o in modalities}
    if with_heads:
        built: dict[str, nn.Module] = {}
        for m in modalities:  # an alias gets its owner's very module (one set of parameters)
            owner = shared.get(m, m)
            if owner not in built:
                built[owner] = build_head(cfg, owner, encoder, create=create)
            heads[m] = built[owner]
    return Model(encoder=encoder, heads=heads,
                 tokenizer_of={m: uses[m]["tokenizer"] for m in modalities},
                 objective_of={m: uses[m]["objective"] for m in modalities}, shared=shared)


def build_head(cfg: dict[str, Any], modality: str, encoder: UniversalEncoder, *, create: Create) -> nn.Module:
    """The pretext head (objective module) of ``modality`` for ``encoder``, by its registered name."""
    use = cfg["run"]["uses"][modality]
    obj = use["objective"]
    return create("objective", obj, encoder=encoder, tokenizer=use["tokenizer"],
                  **dict(cfg["objective"].get(obj, {})))


def architecture(cfg: dict[str, Any]) -> dict[str, Any]:
    """``config.json``: what rebuilds the encoder, tokenizers and heads with no other file (and, where
    modalities share a pretext head, which: ``shared_heads``, ``{alias: owner}``)."""
    arch = {"format": 1, "library": "medkit", "encoder": cfg["encoder"], "trunk": trunk_shape(cfg),
            "uses": cfg["run"]["uses"], "tokenizer": cfg["tokenizer"], "objective": cfg["objective"]}
    shared = shared_heads(cfg)
    if shared:
        arch[SHARED_KEY] = shared
    return arch


def save_model(model: Model, run_dir: Path, cfg: dict[str, Any], *, path: Path | None = None,
               weights: Path | None = None) -> Path:
    """Write ``model.safetensors`` (and ``config.json`` and tokenizer assets) into ``run_dir``.

    ``weights``: a ``model.safetensors`` already written from this very model (the checkpoint's);
    it is linked into place instead of serialising the tensors a second time.
    """
    run_dir = Path(run_dir)
    target = path or run_dir / "model.safetensors"
    if weights is not None:
        atomic_link(weights, target)
    else:
        save_tensors(target, model.state_dict(), metadata=MODEL_METADATA)
    atomic_write_json(run_dir / "config.json", architecture(cfg))
    for name, tok in model.encoder.tokenizers.items():
        saver = getattr(tok, "save_pretrained", None)
        if callable(saver):
            saver(run_dir / TOKENIZER_ASSETS / name)
    return target


def load_model_state(model: Model, path: Path, *, strict: bool = True) -> None:
    """Load ``model.safetensors`` into ``model`` (mismatches name the first key and shapes)."""
    load_state_checked(model.modules(), model.full_state(load_tensors(path)), source=str(path), strict=strict)


def compile_backend(value: Any, *, where: str = "") -> str | None:
    """The ``torch.compile`` backend ``trainer.compile`` asks for: ``None`` for false, ``inductor``
    for true, else the name given; an unknown name is a :class:`ConfigError` naming the key."""
    if value is None or value is False or str(value).lower() in ("false", ""):
        return None
    name = "inductor" if value is True or str(value).lower() == "true" else str(value)
    try:
        compiled_block_call(name)  # torch.compile looks the backend up here (nothing runs yet)
    except Exception as exc:  # noqa: BLE001 - InvalidBackend and whatever a broken backend raises
        import torch._dynamo

        known = ", ".join(sorted(set(torch._dynamo.list_backends()) | {"aot_eager", "eager"}))
        raise ConfigError(f"{where}trainer.compile={value}: {name!r} is not a torch.compile backend here "
                          f"({type(exc).__name__}); use true (inductor), false, or one of: {known}") from None
    return name


def set_trunk_options(encoder: UniversalEncoder, trainer: TrainerConfig) -> None:
    """Apply ``trainer.grad_checkpointing`` and ``trainer.compile`` to the encoder's blocks (in
    training only; evaluation and no-grad passes run them as they are)."""
    encoder.grad_checkpointing = bool(trainer.grad_checkpointing)
    encoder.compile_backend = compile_backend(trainer.compile)
