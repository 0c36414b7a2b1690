"""Backbones for ``medkit finetune``: the medkit encoder (pre-trained or from scratch), timm models,
MONAI networks and the released comparison models (backbone plugins, :mod:`medkit.finetune.external`)
behind one small interface, so every model meets the same heads and metrics."""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence, cast

import torch
from torch import nn

from medkit.api.components import Components, Create
from medkit.storage.files import load_state_checked, load_tensors
from medkit.models.encoder import EncoderOutput, UniversalEncoder
from medkit.api.errors import CheckpointError, ConfigError, DataError
from medkit.api.protocols import Tokenizer

log = logging.getLogger(__name__)

#: Used only when a modality's plugin is not installed: ``dims`` and the default tokenizer.
FALLBACK_MODALITIES: dict[str, tuple[int, str]] = {
    "report": (1, "text_1d"), "xray": (2, "patch_2d"), "pathology": (2, "patch_2d"),
    "ct": (3, "patch_3d"), "mri": (3, "patch_3d"),
}


def modality_info(modality: str, components: Components) -> tuple[int, str]:
    """``(dims, default tokenizer)`` of ``modality`` from its registered spec (``components``: the
    plugin host the caller was handed)."""
    from medkit.api.errors import PluginError

    try:
        spec = components.spec("modality", modality)
        return int(spec.meta["dims"]), str(spec.meta["default_tokenizer"])
    except (PluginError, KeyError):
        if modality in FALLBACK_MODALITIES:
            log.warning("modality %s is not installed; using dims/tokenizer %s", modality,
                        FALLBACK_MODALITIES[modality])
            return FALLBACK_MODALITIES[modality]
        raise


def default_blocks(depth: int) -> list[int]:
    """0-based indices of the blocks a UNETR decoder reads: blocks ``depth·4/12``, ``·7/12``,
    ``·10/12`` and the last (12-block trunk: 4, 7, 10, 12 → ``[3, 6, 9, 11]``)."""
    picks = [max(1, round(depth * k / 12)) for k in (4, 7, 10)] + [depth]
    return [p - 1 for p in picks]


def resolve_source(ref: str) -> Path:
    """A pre-trained run directory from a path or ``hf-hub:ID`` (through ``medkit.hub.hub``)."""
    hub: ModuleType | None
    try:
        hub = importlib.import_module("medkit.hub.hub")
    except ImportError:
        hub = None
    resolver = getattr(hub, "resolve_checkpoint", None) if hub is not None else None
    if resolver is not None:
        path = Path(resolver(ref))
    elif ref.startswith("hf-hub:"):
        raise ConfigError(f"--from {ref}: this medkit has no hub support (medkit.hub.hub); download "
                          f"the run directory and pass its path")
    else:
        path = Path(ref).expanduser()
    has_config = (path / "config.yaml").exists() or (path / "config.json").exists()
    if not has_config or not (path / "model.safetensors").exists():
        raise CheckpointError(f"--from {ref}: {path} is not a finished pre-training run directory "
                              f"(needs config.yaml or config.json, and model.safetensors)")
    return path


def pretrain_config(run_dir: Path) -> dict[str, Any]:
    """The pre-training config of ``run_dir``: ``config.yaml``, or the architecture in
    ``config.json`` (what a Hub download always has) as ``{"run": {"uses"}, "encoder", "tokenizer"}``."""
    from medkit.config.yaml import read_config_json as read_json  # inert: refuses ${...}
    from medkit.engine.engine import load_config

    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").exists():
        cfg = load_config(run_dir)
        if "task" in cfg.get("run", {}):
            raise CheckpointError(f"{run_dir} is a fine-tuning run (medkit finetune); --from and embed take a "
                                  f"pre-training run directory (medkit run)")
        return cfg
    arch = read_json(run_dir / "config.json")
    if "encoder" not in arch:
        raise CheckpointError(f"{run_dir}/config.json has no encoder section; it is not a medkit model")
    return {"run": {"uses": arch.get("uses", {})}, "encoder": arch["encoder"],
            "tokenizer": arch.get("tokenizer", {}), "modality": {}}


class EncoderBackbone(nn.Module):
    """The medkit :class:`UniversalEncoder` seen through one tokenizer."""

    kind = "medkit"
    is_segmenter = False

    def __init__(self, encoder: UniversalEncoder, tokenizer: str) -> None:
        super().__init__()
        if tokenizer not in encoder.tokenizers:
            raise ConfigError(f"the encoder has no tokenizer {tokenizer!r}")
        self.encoder = encoder
        self.tokenizer_name = tokenizer
        tok = cast(Tokenizer, encoder.tokenizers[tokenizer])
        self.dims = int(tok.dims)
        self.embed_dim = int(encoder.embed_dim)
        self.depth = int(encoder.depth)
        self.in_chans = int(getattr(tok, "in_chans", 1))
        self.patch_size = tuple(int(p) for p in getattr(tok, "patch_size", ()))

    @property
    def tokenizer(self) -> Tokenizer:
        return cast(Tokenizer, self.encoder.tokenizers[self.tokenizer_name])

    def default_blocks(self) -> list[int]:
        return default_blocks(self.depth)

    def collate(self, samples: Sequence[dict[str, Any]], modality: str) -> dict[str, torch.Tensor]:
        return self.tokenizer.collate(samples, modality)

    def encode(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               add_cls: bool | None = None, return_hidden: bool = False) -> EncoderOutput:
        tokens = self.encoder.tokenize(self.tokenizer_name, inputs, attention_mask)
        cls = bool(getattr(self.tokenizer, "adds_cls", True)) if add_cls is None else add_cls
        return self.encoder.forward_tokens(tokens, add_cls=cls, return_hidden=return_hidden)

    def pooled(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
               pooling: str = "mean") -> torch.Tensor:
        """``[B, D]``: mean over patch (or non-padding text) tokens, or the CLS token (images:
        the prepended CLS; text: the word-piece ``[CLS]`` at position 0)."""
        out = self.encode(inputs, attention_mask)
        if pooling == "cls":
            return out.x[:, 0]
        return out.pooled()

    def feature_maps(self, inputs: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of ``blocks`` (0-based; the last block gives the encoder output) as grids
        ``[B, D, *grid]``, without CLS."""
        if self.dims == 1:
            raise ConfigError("feature maps need 2D or 3D inputs; text has no spatial grid")
        out = self.encode(inputs, add_cls=False, return_hidden=True)
        maps = []
        for b in blocks:
            x = out.x if b == self.depth - 1 else out.hidden[b]  # [B, N, D]
            maps.append(x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *out.grid))
        return maps


def _stack_images(samples: Sequence[dict[str, Any]], modality: str, dims: int, in_chans: int,
                  who: str) -> dict[str, torch.Tensor]:
    xs = []
    for s in samples:
        x = s.get("input")
        if not isinstance(x, torch.Tensor) or x.ndim != dims + 1 or x.shape[0] not in (1, in_chans):
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"modality {modality!r} sample {s.get('id')!r}: {who} expects [{in_chans}, "
                            f"{'D, ' if dims == 3 else ''}H, W] inputs, got {got}")
        xs.append(x.expand(in_chans, *x.shape[1:]).float())
    if len({tuple(x.shape) for x in xs}) > 1:
        raise DataError(f"modality {modality!r}: samples of one batch have different sizes "
                        f"{sorted({tuple(x.shape) for x in xs})}; set task.input_size")
    return {"inputs": torch.stack(xs)}


class TimmBackbone(nn.Module):
    """Any timm model (2D) with its classifier removed, built without downloading weights unless
    ``pretrained`` is set. ViTs give token grids; CNNs give their stage outputs."""

    kind = "timm"
    is_segmenter = False

    def __init__(self, name: str, *, dims: int, in_chans: int, img_size: Sequence[int] | None,
                 pretrained: bool = False) -> None:
        super().__init__()
        if dims != 2:
            raise ConfigError(f"backbone timm:{name}: timm models take 2D images, but this task's data "
                              f"are {dims}D; use the medkit encoder or a monai: network")
        import timm

        base: dict[str, Any] = {"pretrained": bool(pretrained), "num_classes": 0, "in_chans": int(in_chans)}
        size = [int(s) for s in img_size] if img_size else None
        attempts: list[dict[str, Any]] = ([{"img_size": size, "dynamic_img_size": True}, {"img_size": size}]
                                          if size else [{"dynamic_img_size": True}])
        attempts.append({})  # ViTs then take any multiple of the patch
        last: Exception | None = None
        self.net: Any  # a timm model: num_features, forward_features... are timm's, not nn.Module's
        for extra in attempts:
            try:
                self.net = timm.create_model(name, **base, **extra)
                break
            except TypeError as exc:
                last = exc
            except RuntimeError as exc:
                raise ConfigError(f"backbone timm:{name}: {exc}") from exc
        else:
            raise ConfigError(f"backbone timm:{name}: cannot build it ({last})")
        self.dims, self.in_chans = 2, int(in_chans)
        self.embed_dim = int(self.net.num_features)
        self.num_prefix = int(getattr(self.net, "num_prefix_tokens", 0))
        blocks = getattr(self.net, "blocks", None)
        self.depth = len(blocks) if blocks is not None else len(getattr(self.net, "feature_info", [])) or 4
        patch = getattr(getattr(self.net, "patch_embed", None), "patch_size", None)
        self.patch_size = tuple(int(p) for p in patch) if patch is not None else (16, 16)

    def default_blocks(self) -> list[int]:
        return default_blocks(self.depth)

    def collate(self, samples: Sequence[dict[str, Any]], modality: str) -> dict[str, torch.Tensor]:
        return _stack_images(samples, modality, 2, self.in_chans, "timm backbone")

    def pooled(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
               pooling: str = "mean") -> torch.Tensor:
        f = self.net.forward_features(inputs)
        if f.ndim == 3:  # [B, P + N, D] tokens
            if pooling == "cls":
                if not self.num_prefix:
                    raise ConfigError("pooling 'cls' needs a model with a class token")
                return f[:, 0]
            return f[:, self.num_prefix:].mean(dim=1)
        return f.mean(dim=tuple(range(2, f.ndim)))  # [B, C, H, W] → [B, C]

    def feature_maps(self, inputs: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        fi = getattr(self.net, "forward_intermediates", None)
        if fi is None:
            raise ConfigError("this timm model has no forward_intermediates(); it cannot feed a decoder")
        return list(fi(inputs, indices=list(blocks), intermediates_only=True))


class MonaiBackbone(nn.Module):
    """A ``monai.networks.nets`` network: with ``segmenter`` it is a whole segmentation network
    (``out_channels`` = classes); otherwise its output ``[B, out_channels]`` is the feature vector
    the task head reads."""

    kind = "monai"

    def __init__(self, name: str, *, dims: int, in_chans: int, out_channels: int, segmenter: bool,
                 img_size: Sequence[int] | None = None) -> None:
        super().__init__()
        import monai.networks.nets as nets

        cls = getattr(nets, name, None)
        if not isinstance(cls, type) or not issubclass(cls, nn.Module):
            import difflib

            close = difflib.get_close_matches(name, [n for n in dir(nets) if n[:1].isupper()], n=3)
            raise ConfigError(f"backbone monai:{name}: monai.networks.nets has no network {name!r}"
                              f"{'; did you mean ' + ', '.join(close) + '?' if close else ''}")
        params = inspect.signature(cls.__init__).parameters
        open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs: dict[str, Any] = {}
        for key, value in (("spatial_dims", dims), ("in_channels", in_chans), ("out_channels", out_channels),
                           ("num_classes", out_channels), ("img_size", img_size)):
            forwarded = open_kwargs and key in ("spatial_dims", "in_channels", "num_classes") and not (
                key == "num_classes" and "out_channels" in params)
            if (key in params or forwarded) and value is not None:
                kwargs[key] = list(cast(Sequence[int], value)) if key == "img_size" else value
        if "dimensions" in params and "spatial_dims" not in params:
            kwargs["dimensions"] = dims
        try:
            self.net = cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"backbone monai:{name}: cannot build it with {kwargs} ({exc})") from exc
        self.dims, self.in_chans, self.embed_dim = int(dims), int(in_chans), int(out_channels)
        self.is_segmenter = bool(segmenter)
        self.depth, self.patch_size = 0, ()

    def collate(self, samples: Sequence[dict[str, Any]], modality: str) -> dict[str, torch.Tensor]:
        return _stack_images(samples, modality, self.dims, self.in_chans, "monai backbone")

    def pooled(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
               pooling: str = "mean") -> torch.Tensor:
        out = self.net(inputs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.flatten(1) if out.ndim == 2 else out.mean(dim=tuple(range(2, out.ndim)))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.net(inputs)
        return out[0] if isinstance(out, (tuple, list)) else out


def load_encoder(run_dir: Path, tokenizers: Sequence[str], *, defaults: dict[str, dict[str, Any]],
                 create: Create) -> UniversalEncoder:
    """The pre-trained encoder of ``run_dir`` with ``tokenizers``.

    Built with :func:`medkit.models.build.build_model` (``with_heads=False``, tokenizer assets from
    the run), then every ``encoder.*`` key of ``model.safetensors`` that belongs to the trunk or to
    one of ``tokenizers`` is loaded. A tokenizer the run never trained is freshly initialised
    (with a warning); a missing trunk key is a :class:`CheckpointError`.
    """
    from medkit.models.build import build_model

    run_cfg = pretrain_config(run_dir)
    cfg = {"run": {"uses": {f"_{t}": {"tokenizer": t, "objective": ""} for t in tokenizers}},
           "encoder": run_cfg["encoder"],
           "tokenizer": {t: dict(run_cfg.get("tokenizer", {}).get(t) or defaults.get(t, {})) for t in tokenizers}}
    encoder = build_model(cfg, create=create, with_heads=False, assets_dir=run_dir).encoder
    state = load_tensors(Path(run_dir) / "model.safetensors")
    own = encoder.state_dict()
    picked = {k[len("encoder."):]: v for k, v in state.items()
              if k.startswith("encoder.") and k[len("encoder."):] in own}
    missing = sorted(set(own) - set(picked))
    fresh = sorted({k.split(".")[1] for k in missing if k.startswith("tokenizers.")})
    trunk_missing = [k for k in missing if not k.startswith("tokenizers.")]
    if trunk_missing:
        raise CheckpointError(f"{run_dir}/model.safetensors: missing encoder key {trunk_missing[0]} "
                              f"({len(trunk_missing)} in all); it does not match its config.yaml")
    for name in fresh:
        log.warning("the pre-trained run %s has no trained tokenizer %s; it starts from random init",
                    run_dir, name)
    load_state_checked(encoder, picked, source=str(Path(run_dir) / "model.safetensors"), strict=False)
    return encoder


def encoder_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``build_model`` config of a fine-tuning config (one tokenizer, no heads)."""
    tok = cfg["run"]["tokenizer"]
    return {"run": {"uses": {cfg["run"]["modality"]: {"tokenizer": tok, "objective": ""}}},
            "encoder": cfg["encoder"], "tokenizer": {tok: dict(cfg["tokenizer"].get(tok, {}))}}


def build_backbone(cfg: dict[str, Any], *, out_channels: int, maps: bool, pretrained: bool,
                   components: Components, assets_dir: Path | None = None) -> nn.Module:
    """The backbone a fine-tuning config asks for.

    Args:
        cfg: a composed fine-tuning config (:func:`medkit.finetune.config.compose_finetune`).
        out_channels: classes, used when an external network is a whole segmenter.
        maps: the task reads feature maps (a dense decoder) rather than pooled features.
        pretrained: load the weights of ``run.from`` (False when the caller restores its own).
        assets_dir: where tokenizer assets are (the pre-trained or the fine-tuning run directory).
        components: the plugin host (builds the tokenizer; finds the released backbones).
    """
    from medkit.finetune.config import FinetuneSettings
    from medkit.models.build import build_model

    run, bb = cfg["run"], FinetuneSettings.of(cfg).backbone
    name = bb.name
    dims = int(run["dims"])
    size = cfg["task"].get("input_size") or cfg["task"].get("patch_size")
    in_chans = bb.in_chans or (3 if dims == 2 else 1)
    if name.startswith("timm:"):
        return TimmBackbone(name[5:], dims=dims, in_chans=int(in_chans), img_size=size,
                            pretrained=bb.pretrained)
    if name.startswith("monai:"):
        return MonaiBackbone(name[6:], dims=dims, in_chans=int(in_chans),
                             out_channels=out_channels if maps else bb.features,
                             segmenter=maps, img_size=size)
    from medkit.finetune.external import build_external, parse_spec, unknown_backbone

    if parse_spec(name, components) is not None:
        return build_external(name, dims, components=components, pretrained=pretrained)
    if name != "medkit":
        raise unknown_backbone(name, components)
    tok = run["tokenizer"]
    if pretrained and run.get("from"):
        encoder = load_encoder(Path(run["from"]), [tok], defaults={tok: cfg["tokenizer"].get(tok, {})},
                               create=components.create)
    else:
        encoder = build_model(encoder_config(cfg), create=components.create, with_heads=False,
                              assets_dir=assets_dir).encoder
    return EncoderBackbone(encoder, tok)
