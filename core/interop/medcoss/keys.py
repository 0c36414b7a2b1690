"""Name mapping between the official MedCoSS state dict and a legacy medkit model."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from medkit.api.errors import CheckpointError

#: medkit tokenizer names of the reference's three embedding paths.
TOKENIZERS = {"text": "text_1d", "2d": "patch_2d", "3d": "patch_3d"}
#: Keys the reference saves but never reads in forward.
DEAD_KEYS = ("video_embed.embeddings_pos.position_embeddings.weight", "video_embed.embeddings_type.weight")
#: Added to the text features before the MLM head; only row 0 is used.
MLM_BIAS_KEY = "decoder_pos_embed_1D.weight"

#: ``fused_encoder.layers.{i}.<name>`` → ``encoder.blocks.{i}.<name>`` (timm ``Block``).
LAYER_NAMES = {
    "gamma_1": "ls1.gamma", "gamma_2": "ls2.gamma",
    "self_attn.in_proj_weight": "attn.qkv.weight", "self_attn.in_proj_bias": "attn.qkv.bias",  # [q; k; v]
    "self_attn.out_proj.weight": "attn.proj.weight", "self_attn.out_proj.bias": "attn.proj.bias",
    "linear1.weight": "mlp.fc1.weight", "linear1.bias": "mlp.fc1.bias",
    "linear2.weight": "mlp.fc2.weight", "linear2.bias": "mlp.fc2.bias",
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
}
#: Tokenizer tensors: official key → (path kind, key inside the medkit tokenizer).
TOKENIZER_NAMES: dict[str, tuple[str, str]] = {
    "token_embed.embeddings.weight": ("text", "word_embed.weight"),
    "token_embed.embeddings_norm.weight": ("text", "norm.weight"),
    "token_embed.embeddings_norm.bias": ("text", "norm.bias"),
    "token_embed.embeddings_pos.position_embeddings.weight": ("text", "pos_embed.weight"),
    "token_embed.embeddings_token_type.weight": ("text", "type_embed.weight"),
    "video_embed.embeddings.weight": ("2d", "proj.weight"),
    "video_embed.embeddings.bias": ("2d", "proj.bias"),
    "video_embed.embeddings_3D.weight": ("3d", "proj.weight"),
    "video_embed.embeddings_3D.bias": ("3d", "proj.bias"),
    "video_embed.embeddings_st_pos_2D.spatial_pos_embed.weight": ("2d", "pos.spatial.weight"),
    "video_embed.embeddings_st_pos_2D.temporal_pos_embed.weight": ("2d", "pos.temporal.weight"),
    "video_embed.embeddings_st_pos_3D.spatial_pos_embed.weight": ("3d", "pos.spatial.weight"),
    "video_embed.embeddings_st_pos_3D.temporal_pos_embed.weight": ("3d", "pos.temporal.weight"),
}
#: One LayerNorm serves 2D and 3D in the reference; medkit's tokenizers each own one (a copy each).
SHARED_VIDEO_NORM = {"video_embed.embeddings_norm.weight": "norm.weight",
                     "video_embed.embeddings_norm.bias": "norm.bias"}
#: MAE decoder parts shared by 2D and 3D in the reference → every mae head (a copy each).
_MAE_SHARED = re.compile(r"^(decoder_embed\.(weight|bias)|mask_token|decoder_norm\.(weight|bias)"
                         r"|decoder_blocks\.\d+\.[\w.]+)$")
#: MAE parts of one dimensionality: official key → (kind, key inside the mae objective).
MAE_PER_KIND = {
    "decoder_pred_2D.weight": ("2d", "decoder_pred.weight"), "decoder_pred_2D.bias": ("2d", "decoder_pred.bias"),
    "decoder_pred_3D.weight": ("3d", "decoder_pred.weight"), "decoder_pred_3D.bias": ("3d", "decoder_pred.bias"),
}
#: ``[1, 1 + N, d]`` tables: row 0 is the CLS position, rows 1..N the patch grid (row-major).
MAE_POS = {"decoder_pos_embed_2D": "2d", "decoder_pos_embed_3D": "3d"}
#: MLM head: official key → key inside the mlm objective.
MLM_NAMES = {
    "mlm_head.bias": "head.bias", "mlm_head.decoder.weight": "head.decoder.weight",
    "mlm_head.transform.dense.weight": "head.dense.weight", "mlm_head.transform.dense.bias": "head.dense.bias",
    "mlm_head.transform.LayerNorm.weight": "head.norm.weight",
    "mlm_head.transform.LayerNorm.bias": "head.norm.bias",
}
_LAYER = re.compile(r"^fused_encoder\.layers\.(\d+)\.(.+)$")


def official_key_shapes(*, depth: int = 12, dim: int = 768, mlp_dim: int = 3072, vocab_rows: int = 49411,
                        text_positions: int = 512, rows_2d: int = 1024, rows_3d: int = 4096, patch: int = 16,
                        decoder_dim: int = 512, decoder_depth: int = 8, tokens_2d: int = 196,
                        tokens_3d: int = 144) -> dict[str, tuple[int, ...]]:
    """Every key of the official ``Unified_Model`` state dict with its shape, in the file's order
    (the converter maps each one). The defaults are the release's (300 tensors, 199,205,635 values)."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim), "mask_token": (1, 1, decoder_dim),
        "decoder_pos_embed_2D": (1, tokens_2d + 1, decoder_dim),
        "decoder_pos_embed_3D": (1, tokens_3d + 1, decoder_dim)}
    for i in range(depth):
        p = f"fused_encoder.layers.{i}."
        shapes.update({p + "gamma_1": (dim,), p + "gamma_2": (dim,),
                       p + "self_attn.in_proj_weight": (3 * dim, dim), p + "self_attn.in_proj_bias": (3 * dim,),
                       p + "self_attn.out_proj.weight": (dim, dim), p + "self_attn.out_proj.bias": (dim,),
                       p + "linear1.weight": (mlp_dim, dim), p + "linear1.bias": (mlp_dim,),
                       p + "linear2.weight": (dim, mlp_dim), p + "linear2.bias": (dim,),
                       p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
                       p + "norm2.weight": (dim,), p + "norm2.bias": (dim,)})
    shapes.update({
        "token_embed.embeddings.weight": (vocab_rows, dim),
        "token_embed.embeddings_norm.weight": (dim,), "token_embed.embeddings_norm.bias": (dim,),
        "token_embed.embeddings_pos.position_embeddings.weight": (text_positions, dim),
        "token_embed.embeddings_token_type.weight": (2, dim),
        "video_embed.embeddings_norm.weight": (dim,), "video_embed.embeddings_norm.bias": (dim,),
        DEAD_KEYS[0]: (1600, dim), DEAD_KEYS[1]: (1, dim),
        "video_embed.embeddings_st_pos_2D.spatial_pos_embed.weight": (rows_2d, dim),
        "video_embed.embeddings_st_pos_2D.temporal_pos_embed.weight": (8, dim),
        "video_embed.embeddings_st_pos_3D.spatial_pos_embed.weight": (rows_3d, dim),
        "video_embed.embeddings_st_pos_3D.temporal_pos_embed.weight": (8, dim),
        "video_embed.embeddings.weight": (dim, 3, patch, patch), "video_embed.embeddings.bias": (dim,),
        "video_embed.embeddings_3D.weight": (dim, 1, patch, patch, patch), "video_embed.embeddings_3D.bias": (dim,),
        "decoder_embed.weight": (decoder_dim, dim), "decoder_embed.bias": (decoder_dim,),
        MLM_BIAS_KEY: (2, dim)})
    for i in range(decoder_depth):
        p, d = f"decoder_blocks.{i}.", decoder_dim
        shapes.update({p + "norm1.weight": (d,), p + "norm1.bias": (d,),
                       p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,),
                       p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
                       p + "norm2.weight": (d,), p + "norm2.bias": (d,),
                       p + "mlp.fc1.weight": (4 * d, d), p + "mlp.fc1.bias": (4 * d,),
                       p + "mlp.fc2.weight": (d, 4 * d), p + "mlp.fc2.bias": (d,)})
    shapes.update({
        "decoder_norm.weight": (decoder_dim,), "decoder_norm.bias": (decoder_dim,),
        "decoder_pred_2D.weight": (patch * patch * 3, decoder_dim), "decoder_pred_2D.bias": (patch * patch * 3,),
        "decoder_pred_3D.weight": (patch ** 3, decoder_dim), "decoder_pred_3D.bias": (patch ** 3,),
        "mlm_head.bias": (vocab_rows,),
        "mlm_head.transform.dense.weight": (dim, dim), "mlm_head.transform.dense.bias": (dim,),
        "mlm_head.transform.LayerNorm.weight": (dim,), "mlm_head.transform.LayerNorm.bias": (dim,),
        "mlm_head.decoder.weight": (vocab_rows, dim)})
    return shapes


@dataclass(frozen=True)
class Layout:
    """Where the reference's parts live in a medkit model.

    Attributes:
        tokenizers: path kind (``text``/``2d``/``3d``) → medkit tokenizer name, for the kinds present.
        mae_heads: kind (``2d``/``3d``) → modalities whose pretext head is an ``mae`` objective.
        mlm_heads: modalities whose pretext head is an ``mlm`` objective.
    """

    tokenizers: dict[str, str]
    mae_heads: dict[str, list[str]] = field(default_factory=dict)
    mlm_heads: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Layout:
        """The layout of a run config: ``text_1d``/``patch_2d``/``patch_3d`` and their heads."""
        kinds = {name: kind for kind, name in TOKENIZERS.items()}
        tokenizers: dict[str, str] = {}
        mae: dict[str, list[str]] = {}
        mlm: list[str] = []
        for m, use in cfg["run"]["uses"].items():
            kind = kinds.get(use["tokenizer"])
            if kind is None:
                continue
            tokenizers[kind] = use["tokenizer"]
            if use["objective"] == "mae" and kind != "text":
                mae.setdefault(kind, []).append(m)
            elif use["objective"] == "mlm" and kind == "text":
                mlm.append(m)
        return cls(tokenizers=tokenizers, mae_heads=mae, mlm_heads=mlm)

    def tokenizer_key(self, kind: str, sub: str) -> str:
        return f"encoder.tokenizers.{self.tokenizers[kind]}.{sub}"


@dataclass
class Conversion:
    """The result of :func:`official_to_medkit`."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # medkit key → tensor
    sources: dict[str, str] = field(default_factory=dict)  # medkit key → official key
    dropped: dict[str, str] = field(default_factory=dict)  # official key → why it was not used
    missing: list[str] = field(default_factory=list)  # medkit head keys no official tensor fills
    folded: dict[str, str] = field(default_factory=dict)  # official key → medkit key it was folded into

    @property
    def converted(self) -> list[str]:
        """Official keys that went into the medkit model."""
        return sorted(set(self.sources.values()) | set(self.folded))


class _NoFit(Exception):
    """A head tensor whose shape does not fit the medkit head."""


def _grid_rows(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Rows 1..N of a ``[1, 1 + N, d]`` decoder table as medkit's ``[1, d, *grid]`` table."""
    if len(shape) < 3 or t.ndim != 3 or t.shape[1] - 1 != math.prod(shape[2:]) or t.shape[2] != shape[1]:
        raise _NoFit(f"{tuple(t.shape)} does not give a {list(shape[2:])} grid of width {shape[1]}")
    return t[:, 1:].transpose(1, 2).reshape(shape)


def _routes(key: str, layout: Layout) -> list[tuple[str, Callable[..., torch.Tensor] | None]] | str:
    """``[(medkit key, transform)]`` for one official key, or the reason it is not used."""
    match = _LAYER.match(key)
    if match and match.group(2) in LAYER_NAMES:
        return [(f"encoder.blocks.{match.group(1)}.{LAYER_NAMES[match.group(2)]}", None)]
    if key == "cls_token":
        return [("encoder.cls_token", None)]
    if key in DEAD_KEYS:
        return "never used in the reference's forward"
    if key in TOKENIZER_NAMES:
        kind, sub = TOKENIZER_NAMES[key]
        if kind not in layout.tokenizers:
            return f"the run has no {TOKENIZERS[kind]} tokenizer: no {kind} modality was selected"
        return [(layout.tokenizer_key(kind, sub), None)]
    if key in SHARED_VIDEO_NORM:
        dst: list[tuple[str, Callable[..., torch.Tensor] | None]] = [
            (layout.tokenizer_key(k, SHARED_VIDEO_NORM[key]), None) for k in ("2d", "3d") if k in layout.tokenizers]
        return dst or "the run has no image tokenizer"
    if _MAE_SHARED.match(key):
        heads = layout.mae_heads.get("2d", []) + layout.mae_heads.get("3d", [])
        return [(f"heads.{m}.{key}", None) for m in heads] or "the run has no mae head"
    if key in MAE_PER_KIND:
        kind, sub = MAE_PER_KIND[key]
        return [(f"heads.{m}.{sub}", None) for m in layout.mae_heads.get(kind, [])] or f"the run has no {kind} mae head"
    if key in MAE_POS:
        heads = layout.mae_heads.get(MAE_POS[key], [])
        out: list[tuple[str, Callable[..., torch.Tensor] | None]] = []
        for m in heads:
            out += [(f"heads.{m}.decoder_cls_pos", lambda t, shape: t[:, :1]),
                    (f"heads.{m}.decoder_pos_embed", _grid_rows)]
        return out or f"the run has no {MAE_POS[key]} mae head"
    if key in MLM_NAMES:
        return [(f"heads.{m}.{MLM_NAMES[key]}", None) for m in layout.mlm_heads] or "the run has no mlm head"
    return "not a key of the reference model"


def official_to_medkit(state: Mapping[str, torch.Tensor], layout: Layout,
                       expected: Mapping[str, tuple[int, ...]], *, source: str = "checkpoint") -> Conversion:
    """Map an official state dict onto the keys (and shapes) of a legacy medkit model.

    Encoder keys (trunk, CLS, tokenizers) must all be filled with matching shapes, or a
    :class:`CheckpointError` names the key. A head tensor that does not fit is dropped with the
    reason; head keys left unfilled are listed in ``missing``. ``decoder_pos_embed_1D`` row 0 (a
    constant added before the MLM head) is folded into the head's first bias: ``b + W·v``.

    Args:
        state: the official ``checkpoint["model"]``.
        layout: where the parts go (:meth:`Layout.from_config`).
        expected: every key of the medkit model (``model.safetensors`` names) with its shape.
        source: the checkpoint's name, for messages.
    """
    conv = Conversion()
    for key, value in state.items():
        if key == MLM_BIAS_KEY:
            continue
        routes = _routes(key, layout)
        if isinstance(routes, str):
            conv.dropped[key] = routes
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {key} is a {type(value).__name__}, not a tensor")
        reasons, placed = [], 0
        for dst, fn in routes:
            shape = expected.get(dst)
            try:
                if shape is None:
                    raise _NoFit(f"the medkit model has no {dst}")
                tensor = value if fn is None else fn(value, shape)
                if tuple(tensor.shape) != tuple(shape):
                    raise _NoFit(f"{dst} expects {tuple(shape)}, the checkpoint has {tuple(tensor.shape)}")
            except _NoFit as exc:
                if not dst.startswith("heads."):
                    raise CheckpointError(f"{source}: {key} {tuple(value.shape)} cannot go into {dst}: {exc}; "
                                          f"the converter reads the official MedCoSS release (ViT-B) "
                                          f"into a legacy encoder (encoder.legacy=true)") from None
                reasons.append(str(exc))
                continue
            # the first copy keeps the loaded storage; every other one (and every slice) gets its own
            tensor = tensor.contiguous() if fn is None and not placed else tensor.clone(
                memory_format=torch.contiguous_format)
            conv.tensors[dst] = tensor.detach()
            conv.sources[dst] = key
            placed += 1
        if reasons:
            conv.dropped[key] = ("partly: " if placed else "") + "; ".join(reasons)
    _fold_mlm_bias(state, layout, conv)
    missing_encoder = [k for k in expected if k.startswith("encoder.") and k not in conv.tensors]
    if missing_encoder:
        raise CheckpointError(f"{source}: no tensor for {missing_encoder[0]} ({len(missing_encoder)} encoder "
                              f"keys in all); it is not an official MedCoSS checkpoint")
    conv.missing = [k for k in expected if k not in conv.tensors]
    return conv


def _fold_mlm_bias(state: Mapping[str, torch.Tensor], layout: Layout, conv: Conversion) -> None:
    """MLM head of the reference: ``head(x + v)`` with ``v = decoder_pos_embed_1D[0]``; medkit's head
    has no ``v``, so ``v`` goes into the first linear's bias: ``W(x + v) + b = Wx + (Wv + b)``."""
    table = state.get(MLM_BIAS_KEY)
    if table is None:
        return
    targets = []
    for m in layout.mlm_heads:
        w, b = conv.tensors.get(f"heads.{m}.head.dense.weight"), conv.tensors.get(f"heads.{m}.head.dense.bias")
        if w is None or b is None or table.ndim != 2 or table.shape[1] != w.shape[1]:
            continue
        folded = (w.double() @ table[0].double() + b.double()).to(b.dtype)
        conv.tensors[f"heads.{m}.head.dense.bias"] = folded
        targets.append(f"heads.{m}.head.dense.bias")
    if targets:
        conv.folded[MLM_BIAS_KEY] = ", ".join(targets) + " (row 0 as W·v; row 1 is never used)"
    else:
        conv.dropped[MLM_BIAS_KEY] = "the run has no mlm head to fold it into"


def medkit_to_official(tensors: Mapping[str, torch.Tensor], layout: Layout) -> dict[str, torch.Tensor]:
    """The inverse mapping: a legacy medkit state dict → official keys, for the parts ``layout`` has.

    Shared reference tensors come from the first medkit copy (2D before 3D; the first head). The
    MLM bias is already folded into the head, so ``decoder_pos_embed_1D`` comes back as zeros, and
    the two dead tables come back as zeros (unused in forward): the result loads into the reference
    model with ``strict=True`` when every part is present.
    """
    out: dict[str, torch.Tensor] = {}
    if "encoder.cls_token" in tensors:
        out["cls_token"] = tensors["encoder.cls_token"]
    inverse_layer = {v: k for k, v in LAYER_NAMES.items()}
    for key, value in tensors.items():
        match = re.match(r"^encoder\.blocks\.(\d+)\.(.+)$", key)
        if match and match.group(2) in inverse_layer:
            out[f"fused_encoder.layers.{match.group(1)}.{inverse_layer[match.group(2)]}"] = value
    for official, (kind, sub) in TOKENIZER_NAMES.items():
        if kind in layout.tokenizers and layout.tokenizer_key(kind, sub) in tensors:
            out[official] = tensors[layout.tokenizer_key(kind, sub)]
    for official, sub in SHARED_VIDEO_NORM.items():
        for kind in ("2d", "3d"):
            if kind in layout.tokenizers and layout.tokenizer_key(kind, sub) in tensors:
                out[official] = tensors[layout.tokenizer_key(kind, sub)]
                break
    mae = layout.mae_heads.get("2d", []) + layout.mae_heads.get("3d", [])
    if mae:
        prefix = f"heads.{mae[0]}."
        for key, value in tensors.items():
            if key.startswith(prefix) and _MAE_SHARED.match(key[len(prefix):]):
                out[key[len(prefix):]] = value
    for official, (kind, sub) in MAE_PER_KIND.items():
        heads = layout.mae_heads.get(kind, [])
        if heads and f"heads.{heads[0]}.{sub}" in tensors:
            out[official] = tensors[f"heads.{heads[0]}.{sub}"]
    for official, kind in MAE_POS.items():
        heads = layout.mae_heads.get(kind, [])
        if heads and f"heads.{heads[0]}.decoder_pos_embed" in tensors:
            grid = tensors[f"heads.{heads[0]}.decoder_pos_embed"]  # [1, d, *g]
            out[official] = torch.cat([tensors[f"heads.{heads[0]}.decoder_cls_pos"],
                                       grid.flatten(2).transpose(1, 2)], dim=1)
    if layout.mlm_heads:
        prefix = f"heads.{layout.mlm_heads[0]}."
        for official, sub in MLM_NAMES.items():
            if prefix + sub in tensors:
                out[official] = tensors[prefix + sub]
        if prefix + "head.dense.bias" in tensors:
            width = tensors[prefix + "head.dense.bias"].shape[0]
            out[MLM_BIAS_KEY] = torch.zeros(2, width)
    if "2d" in layout.tokenizers or "3d" in layout.tokenizers:
        width = int(out["cls_token"].shape[-1]) if "cls_token" in out else 0
        if width:
            out[DEAD_KEYS[0]] = torch.zeros(1600, width)
            out[DEAD_KEYS[1]] = torch.zeros(1, width)
    return out
