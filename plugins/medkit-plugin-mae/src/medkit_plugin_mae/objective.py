"""Masked autoencoding (MAE) for 2D images and 3D volumes, as MedCoSS trains it."""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any

import torch
from torch import nn

from medkit.api import (
    Batch, Block, ConfigError, LossOutput, Masking, UniversalEncoder, gather_tokens, init_vit_weights,
    interpolate_grid, make_noise, random_masking, sincos_init,
)

log = logging.getLogger(__name__)

#: Per-head width of the decoders chosen for encoders narrower than ViT-B (512 / 16 in the spec).
HEAD_DIM = 32
#: What an image tokenizer must provide for pixel reconstruction.
_TOKENIZER_API = ("patchify", "unpatchify", "base_grid", "patch_dim")


def decoder_shape(embed_dim: int, dim: int | None = None, depth: int | None = None,
                  heads: int | None = None) -> tuple[int, int, int]:
    """The decoder's ``(dim, depth, heads)``; explicit (non-``None``) values win.

    Defaults: an encoder of width ≥ 768 gets MedCoSS's decoder, 512 wide, 8 blocks, 16 heads. A
    narrower encoder gets a proportionally small one, so the ``tiny`` preset trains fast:
    ``dim = max(32, embed_dim // 2)``, ``depth = clamp(embed_dim // 96, 1, 8)``, and heads of width
    32 (the largest head count ≤ ``dim // 32`` that divides ``dim``). Width 192 → 96 / 2 / 3;
    width 384 → 192 / 4 / 6.
    """
    big = embed_dim >= 768
    dim = int(dim) if dim is not None else (512 if big else max(32, embed_dim // 2))
    depth = int(depth) if depth is not None else (8 if big else max(1, min(8, embed_dim // 96)))
    if heads is None:
        heads = max(h for h in range(1, max(1, dim // HEAD_DIM) + 1) if dim % h == 0)
    heads = int(heads)
    if dim <= 0 or depth <= 0 or heads <= 0 or dim % heads:
        raise ConfigError(f"objective mae: decoder_dim {dim} must be positive and divisible by "
                          f"decoder_heads {heads} (decoder_depth {depth} must be positive); "
                          f"set objective.mae.decoder_dim / decoder_heads")
    return dim, depth, heads


class MAEObjective(nn.Module):
    """MAE pretext loss with its own decoder (``mae``).

    Stages, as in facebookresearch/mae ``models_mae.py``: :meth:`random_masking` →
    :meth:`forward_encoder` (the shared encoder on [CLS] + visible tokens) → :meth:`forward_decoder`
    (embed, append mask tokens, unshuffle, add positions, blocks, norm, predict pixels) →
    :meth:`forward_loss` (MSE on masked patches only). Holds the decoder only; the encoder is
    passed to every call, so the objective's state dict is just its heads.

    The decoder position table is grid-aware like the tokenizer's: a learned ``[1, d, *base_grid]``
    table initialised from sin-cos and resampled to the batch's grid, plus a learned CLS position
    (zero-initialised, like the zero CLS row of MAE's sin-cos table).

    Args:
        encoder: the shared :class:`~medkit.models.encoder.UniversalEncoder` (engine-supplied; only its
            width and the tokenizer's geometry are read here).
        tokenizer: name of the image tokenizer (``patch_2d`` / ``patch_3d``) in ``encoder.tokenizers``.
        mask_ratio: fraction of tokens removed; ``int(N * (1 - mask_ratio))`` are kept.
        decoder_dim, decoder_depth, decoder_heads: decoder shape; ``None`` picks it from the encoder
            width (see :func:`decoder_shape`).
        norm_pix_loss: normalise each target patch by its mean and unbiased variance.
    """

    def __init__(self, encoder: UniversalEncoder, tokenizer: str, mask_ratio: float = 0.75,
                 decoder_dim: int | None = None, decoder_depth: int | None = None,
                 decoder_heads: int | None = None, norm_pix_loss: bool = True) -> None:
        super().__init__()
        if not 0.0 < float(mask_ratio) < 1.0:
            raise ConfigError(f"objective mae: mask_ratio must be in (0, 1), got {mask_ratio}; "
                              f"set objective.mae.mask_ratio (MedCoSS uses 0.75)")
        tok = _image_tokenizer(encoder, tokenizer)
        self.tokenizer = tokenizer
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        if self.norm_pix_loss and tok.patch_dim < 2:
            raise ConfigError(f"objective mae: norm_pix_loss needs at least 2 values per patch, "
                              f"tokenizer {tokenizer} has {tok.patch_dim}; set objective.mae.norm_pix_loss=false")
        self.base_grid = tuple(int(g) for g in tok.base_grid)
        self.patch_dim = int(tok.patch_dim)
        dim, depth, heads = decoder_shape(int(encoder.embed_dim), decoder_dim, decoder_depth, decoder_heads)
        self.decoder_dim = dim

        self.decoder_embed = nn.Linear(encoder.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(sincos_init(dim, self.base_grid))  # [1, d, *g0]
        self.decoder_cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_blocks = nn.ModuleList([
            Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(depth)
        ])
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dim, self.patch_dim)
        self._init_weights()
        log.debug("mae decoder for %s: dim %d, depth %d, heads %d", tokenizer, dim, depth, heads)

    def _init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        init_vit_weights(self.modules())

    # -- stages ----------------------------------------------------------------------------
    def random_masking(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Masking:
        """Per-sample shuffle of ``x [B, N, D]``; keeps ``int(N * (1 - mask_ratio))`` tokens."""
        noise = make_noise(x.shape[0], x.shape[1], device=x.device, generator=generator)  # [B, N]
        return random_masking(noise, self.mask_ratio)

    def forward_encoder(self, encoder: UniversalEncoder, inputs: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, Masking, tuple[int, ...]]:
        """Encode the visible patches: ``(latent [B, 1 + n_keep, D], masking, grid)``."""
        tokens = encoder.tokenize(self.tokenizer, inputs)  # x [B, N, D], positions added
        masking = self.random_masking(tokens.x, generator)
        out = encoder.forward_tokens(tokens, ids_keep=masking.ids_keep, add_cls=True)
        return out.x, masking, tuple(tokens.grid)  # [B, 1 + n_keep, D]

    def decoder_positions(self, grid: tuple[int, ...]) -> torch.Tensor:
        """Decoder positions for [CLS] + a ``grid`` of tokens, ``[1, 1 + N, d]``."""
        table = interpolate_grid(self.decoder_pos_embed, tuple(grid))  # [1, N, d]
        return torch.cat([self.decoder_cls_pos, table], dim=1)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor,
                        grid: tuple[int, ...]) -> torch.Tensor:
        """Predict every patch's pixels from the visible tokens: ``[B, N, prod(patch) * C]``."""
        x = self.decoder_embed(latent)  # [B, 1 + n_keep, d]
        b, n_vis, _ = x.shape
        n_tok = ids_restore.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(b, n_tok + 1 - n_vis, -1)  # [B, N - n_keep, d]
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)  # [B, N, d], shuffled order
        x_ = gather_tokens(x_, ids_restore)  # [B, N, d], unshuffled
        x = torch.cat([x[:, :1], x_], dim=1)  # [B, 1 + N, d], CLS kept
        x = x + self.decoder_positions(grid).to(x.dtype)
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)  # [B, 1 + N, P]
        return x[:, 1:]  # [B, N, P], CLS dropped

    def target(self, encoder: UniversalEncoder, inputs: torch.Tensor) -> torch.Tensor:
        """Pixel targets ``[B, N, P]``: patchified inputs, per-patch normalised with ``norm_pix_loss``."""
        tok: Any = encoder.tokenizers[self.tokenizer]
        target = tok.patchify(inputs).float()  # [B, N, P]
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True, unbiased=True)  # unbiased, as MAE/MedCoSS
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, encoder: UniversalEncoder, inputs: torch.Tensor, pred: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
        """MSE per patch, averaged over the masked patches only (``mask [B, N]``, 1 = masked)."""
        target = self.target(encoder, inputs)  # [B, N, P]
        loss = ((pred.float() - target) ** 2).mean(dim=-1)  # [B, N]
        mask = mask.to(loss.dtype)
        return (loss * mask).sum() / mask.sum()

    # -- entry points ----------------------------------------------------------------------
    def forward(self, encoder: UniversalEncoder, batch: Batch, *,
                generator: torch.Generator | None = None) -> LossOutput:
        """MAE loss of ``batch`` (``inputs [B, C, *S]``); the mask is drawn from ``generator``."""
        inputs = batch.inputs  # [B, C, *S]
        latent, masking, grid = self.forward_encoder(encoder, inputs, generator)
        pred = self.forward_decoder(latent, masking.ids_restore, grid)  # [B, N, P]
        loss = self.forward_loss(encoder, inputs, pred, masking.mask)
        return LossOutput(loss=loss, metrics={"mae": loss.detach()})

    @torch.no_grad()
    def reconstruct(self, encoder: UniversalEncoder, batch: Batch,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted images and the mask, both ``[B, C, *S]`` (mask 1 = the pixel was hidden).

        With ``norm_pix_loss`` the prediction is in per-patch normalised units; it is mapped back to
        pixels with each patch's own mean and standard deviation from the input (for viewing only).
        """
        tok: Any = encoder.tokenizers[self.tokenizer]
        inputs = batch.inputs
        latent, masking, grid = self.forward_encoder(encoder, inputs, generator)
        pred = self.forward_decoder(latent, masking.ids_restore, grid).float()  # [B, N, P]
        if self.norm_pix_loss:
            patches = tok.patchify(inputs).float()
            mean = patches.mean(dim=-1, keepdim=True)
            std = (patches.var(dim=-1, keepdim=True, unbiased=True) + 1.0e-6) ** 0.5
            pred = pred * std + mean
        mask = masking.mask.unsqueeze(-1).expand(-1, -1, pred.shape[-1])  # [B, N, P]
        return tok.unpatchify(pred, grid), tok.unpatchify(mask.to(pred.dtype), grid)


def _image_tokenizer(encoder: UniversalEncoder, name: str) -> Any:
    """The tokenizer ``name`` of ``encoder``, checked to support pixel reconstruction."""
    tokenizers = getattr(encoder, "tokenizers", {})
    if name not in tokenizers:
        raise ConfigError(f"objective mae: the encoder has no tokenizer {name!r} (it has "
                          f"{', '.join(tokenizers) or 'none'}); pick the modality's image tokenizer")
    tok = tokenizers[name]
    missing = [a for a in _TOKENIZER_API if not hasattr(tok, a)]
    if missing:
        raise ConfigError(f"objective mae needs an image patch tokenizer (patch_2d, patch_3d); tokenizer "
                          f"{name!r} lacks {', '.join(missing)}; use objective mlm for text")
    if math.prod(int(g) for g in tok.base_grid) <= 0:
        raise ConfigError(f"objective mae: tokenizer {name!r} has an empty base grid {tok.base_grid}")
    return tok
