"""UniMiSS (Xie et al., ECCV 2022; YtongXie/UniMiSS-code): the dimension-free pyramid transformer MiT
(``models/MiT_encoder.py``, ``encoder_small``, ``modal_type='MM'``: both 2D and 3D patch embeddings,
instance norm, LeakyReLU) pre-trained on chest X-rays and CT, loaded from the ``student`` of
``UniMiss_small.pth`` as the authors' downstream code does."""

from __future__ import annotations

import argparse
import math
from typing import Any, Sequence

import torch
from torch import nn

from medkit.api import ConfigError, ExternalBackbone, Family, StateDict, entry, split_keys

#: ``encoder_small``.
EMBED = (48, 128, 256, 512)
DEPTHS = (2, 3, 4, 3)
HEADS = (1, 2, 4, 8)
SR = (6, 4, 2, 1)
#: Pre-training sizes (``main.py``): they fix the stored position tables.
IMG2D, IMG3D = 224, (16, 96, 96)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Spatial-reduction attention: keys/values from the class token plus the patch grid reduced by a
    ``sr×sr(×sr)`` strided conv (``sr2D`` or ``sr3D``) and a LayerNorm."""

    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        self.heads, self.scale, self.sr = heads, (dim // heads) ** -0.5, sr
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.sr2D = nn.Conv2d(dim, dim, kernel_size=sr, stride=sr)
            self.sr3D = nn.Conv3d(dim, dim, kernel_size=sr, stride=sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3)
        src = x
        if self.sr > 1:
            conv = self.sr2D if len(grid) == 2 else self.sr3D
            patches = conv(x[:, 1:].transpose(1, 2).reshape(b, c, *grid)).reshape(b, c, -1).transpose(1, 2)
            src = self.norm(torch.cat([x[:, :1], patches], dim=1))
        kv = self.kv(src).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ kv[0].transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ kv[1]).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), grid)
        return x + self.mlp(self.norm2(x))


class ConvBlock(nn.Module):
    """``Conv2dBlock`` / ``Conv3dBlock``: conv (no bias) → affine instance norm → LeakyReLU."""

    def __init__(self, dims: int, cin: int, cout: int, kernel: int, stride: Any, padding: int) -> None:
        super().__init__()
        conv, norm = (nn.Conv2d, nn.InstanceNorm2d) if dims == 2 else (nn.Conv3d, nn.InstanceNorm3d)
        self.conv = conv(cin, cout, kernel_size=kernel, stride=stride, padding=padding, bias=False)
        self.norm = norm(cout, affine=True)
        self.nonlin = nn.LeakyReLU(negative_slope=1e-2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.norm(self.conv(x)))


class PatchEmbed(nn.Module):
    """``PatchEmbed2D/3D``: a stride-2 3×3(×3) ``ConvBlock`` (``proj``)."""

    def __init__(self, dims: int, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = ConvBlock(dims, cin, cout, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _interp_pos(pos: torch.Tensor, stored: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """The class row plus the patch table resized from ``stored`` to ``grid`` (2D bicubic, 3D
    trilinear), as the authors' ``interpolate_pos_encoding2D/3D`` for square grids of the stored depth;
    the grid is taken as (D,) H, W and any size is allowed."""
    if tuple(stored) == tuple(grid):
        return pos
    cls, table = pos[:, :1], pos[:, 1:]
    dim = pos.shape[-1]
    table = table.reshape(1, *stored, dim).movedim(-1, 1)
    mode = "bicubic" if len(grid) == 2 else "trilinear"
    table = nn.functional.interpolate(table, size=tuple(grid), mode=mode, align_corners=False)
    return torch.cat([cls, table.movedim(1, -1).reshape(1, -1, dim)], dim=1)


class MiTEncoder(nn.Module):
    """``MiT_encoder`` (``encoder_small``, ``modal_type='MM'``): its ``state_dict`` has the released
    names (``patch_embed2D0..4``, ``pos_embed2D1..4``, the 3D counterparts, ``block1..4``,
    ``cls_tokens1..4``)."""

    def __init__(self) -> None:
        super().__init__()
        for d, tag, cin, stem_stride in ((2, "2D", 3, 2), (3, "3D", 1, (1, 2, 2))):
            setattr(self, f"patch_embed{tag}0", ConvBlock(d, cin, 32, 7, stem_stride, 3))
            prev = 32
            for i, width in enumerate(EMBED, start=1):
                setattr(self, f"patch_embed{tag}{i}", PatchEmbed(d, prev, width))
                prev = width
        for i, width in enumerate(EMBED, start=1):
            for tag in ("2D", "3D"):
                n = math.prod(self.stored_grid(tag, i))
                setattr(self, f"pos_embed{tag}{i}", nn.Parameter(torch.zeros(1, n + 1, width)))
                nn.init.trunc_normal_(getattr(self, f"pos_embed{tag}{i}"), std=0.02)
        for i, (width, depth, heads, sr) in enumerate(zip(EMBED, DEPTHS, HEADS, SR), start=1):
            setattr(self, f"block{i}", nn.ModuleList([Block(width, heads, sr) for _ in range(depth)]))
        self.cls_tokens1 = nn.Parameter(torch.zeros(1, 1, EMBED[0]))
        nn.init.trunc_normal_(self.cls_tokens1, std=0.02)
        self.cls_tokens2 = nn.Linear(EMBED[0], EMBED[1])
        self.cls_tokens3 = nn.Linear(EMBED[1], EMBED[2])
        self.cls_tokens4 = nn.Linear(EMBED[2], EMBED[3])

    @staticmethod
    def stored_grid(tag: str, stage: int) -> tuple[int, ...]:
        """The grid of stage ``stage`` (1-4) at the pre-training size (2D 224²: 56, 28, 14, 7; 3D
        16×96×96: 8×24×24 … 1×3×3)."""
        if tag == "2D":
            return (IMG2D // 2 ** (stage + 1),) * 2
        return (IMG3D[0] // 2 ** stage, IMG3D[1] // 2 ** (stage + 1), IMG3D[2] // 2 ** (stage + 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs 1..4 as grids ``[B, C_i, *grid_i]`` (stage 4 before any norm, as released)."""
        tag = "2D" if x.ndim == 4 else "3D"
        b = x.shape[0]
        x = getattr(self, f"patch_embed{tag}0")(x)
        outs: list[torch.Tensor] = []
        cls: torch.Tensor | None = None
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{tag}{i}")(x)
            grid = tuple(x.shape[2:])
            tokens = x.flatten(2).transpose(1, 2)
            cls = self.cls_tokens1.expand(b, -1, -1) if cls is None else getattr(self, f"cls_tokens{i}")(cls)[:, None]
            tokens = torch.cat([cls, tokens], dim=1)
            tokens = tokens + _interp_pos(getattr(self, f"pos_embed{tag}{i}"), self.stored_grid(tag, i), grid)
            for blk in getattr(self, f"block{i}"):
                tokens = blk(tokens, grid)
            cls = tokens[:, 0]
            x = tokens[:, 1:].transpose(1, 2).reshape(b, -1, *grid)
            outs.append(x)
        self.last_cls = cls
        return outs


class UniMiSSBackbone(ExternalBackbone):
    """MiT through its 2D (3-channel) or 3D (1-channel) path: pooled features are the mean of the stage-4
    patch tokens (``pooling=cls``: its class token), 512 channels; stage maps are stages 1-4."""

    family = "unimiss"

    def __init__(self, dims: int) -> None:
        super().__init__(dims=dims, in_chans=3 if dims == 2 else 1, embed_dim=EMBED[-1])
        self.net = MiTEncoder()

    def stages(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        size = [int(v) for v in inputs.shape[2:]]
        need = [32, 32] if self.dims == 2 else [16, 32, 32]  # the grids the spatial reductions 6, 4, 2 need
        last = math.prod(-(-v // (16 if self.dims == 3 and k == 0 else 32)) for k, v in enumerate(size))
        if any(v < n for v, n in zip(size, need)) or last <= 1:
            least = [64, 64] if self.dims == 2 else [16, 64, 64]
            raise ConfigError(f"backbone unimiss: inputs of {size} are too small for MiT (spatial reductions 6, 4, 2 "
                              f"and an instance norm at stride 32); use at least {least} "
                              f"(task.input_size / task.patch_size; UniMiSS pre-trained on 224x224 and 16x96x96)")
        return self.net(inputs)

    def pooled(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
               pooling: str = "mean") -> torch.Tensor:
        last = self.stages(inputs)[-1]
        if pooling == "cls":
            assert self.net.last_cls is not None  # stages() has just set it
            return self.net.last_cls
        return last.flatten(2).mean(dim=2)


def map_keys(obj: Any, source: str) -> tuple[StateDict, dict[str, str]]:
    """``student`` (the downstream code's ``pre_type``; ``teacher`` if absent): ``module.`` stripped,
    ``backbone.transformer.*`` kept; the pre-training decoder (``backbone.Dec*``, ``backbone.norm``,
    ``backbone.cls_tokens0..2``) and the DINO ``head.*`` are dropped."""
    state = entry(obj, ["student", "teacher"], source, "UniMiSS")
    rules = [("backbone.transformer.", "", ""),
             ("backbone.", None, "pre-training decoder"),
             ("head.", None, "DINO projection head of pre-training")]
    return split_keys(state, rules, source, "UniMiSS")


def build(dims: int) -> UniMiSSBackbone:
    if dims not in (2, 3):
        raise ConfigError(f"UniMiSS takes 2D or 3D images; the data are {dims}D")
    return UniMiSSBackbone(dims)


FAMILY = Family(name="unimiss", title="UniMiSS", repository="YtongXie/UniMiSS-code", dims=(2, 3),
                allowed=(argparse.Namespace,), build=build, map_keys=map_keys,
                release="UniMiss_small.pth (entry 'student')",
                paper_params="MiT small, 28.52 M (the authors' code prints it for the MM encoder)")
