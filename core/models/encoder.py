"""The shared transformer trunk with one tokenizer per dimensionality."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from medkit.api.randomness import per_sample_rand, replayable
from medkit.api.errors import ConfigError
from medkit.models.legacy import legacy_text_attention_mask
from medkit.models.masking import gather_tokens

#: Trunk shapes per preset. ``base`` is ViT-B (85,072,896 trunk parameters).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"depth": 4, "embed_dim": 192, "num_heads": 3, "mlp_ratio": 4.0},
    "small": {"depth": 12, "embed_dim": 384, "num_heads": 6, "mlp_ratio": 4.0},
    "base": {"depth": 12, "embed_dim": 768, "num_heads": 12, "mlp_ratio": 4.0},
}


@dataclass
class Tokens:
    """Output of a tokenizer."""

    x: torch.Tensor  # [B, N, D], positions already added
    padding_mask: torch.Tensor | None = None  # [B, N] bool, True = padding (text only)
    grid: tuple[int, ...] = ()  # token grid (h, w) or (d, h, w); (L,) for text


@dataclass
class EncoderOutput:
    """Output of the trunk."""

    x: torch.Tensor  # [B, P + n, D]; P = num_prefix (1 when the CLS was prepended)
    padding_mask: torch.Tensor | None  # [B, P + n] bool, True = padding
    num_prefix: int
    grid: tuple[int, ...] = ()
    hidden: list[torch.Tensor] = field(default_factory=list)  # per-block outputs when asked

    @property
    def patch_tokens(self) -> torch.Tensor:
        """Tokens without the CLS prefix, ``[B, n, D]``."""
        return self.x[:, self.num_prefix:]

    def pooled(self) -> torch.Tensor:
        """Mean over non-padding, non-prefix tokens, ``[B, D]``."""
        tokens = self.patch_tokens
        if self.padding_mask is None:
            return tokens.mean(dim=1)
        keep = (~self.padding_mask[:, self.num_prefix:]).to(tokens.dtype).unsqueeze(-1)
        return (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


def resolve_trunk(preset: str, **overrides: Any) -> dict[str, Any]:
    """Trunk shape of ``preset`` with explicit (non-``None``) overrides applied."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown encoder preset {preset!r}; choose one of {', '.join(PRESETS)}")
    shape = dict(PRESETS[preset])
    shape.update({k: v for k, v in overrides.items() if v is not None})
    if shape["embed_dim"] % shape["num_heads"]:
        raise ConfigError(f"encoder embed_dim {shape['embed_dim']} is not divisible by "
                          f"num_heads {shape['num_heads']}; change encoder.embed_dim or encoder.num_heads")
    return shape


#: DropPath's per-sample draw. :func:`compiled_block_call` swaps in a ``torch.compiler.disable``d copy:
#: under ``torch.compile`` the draw then runs eagerly (a graph break) instead of being traced with
#: guards on each step's stream seeds, which would recompile every step (torch._dynamo is imported
#: only then: it costs ~1.4 s)
_DRAW: dict[str, Callable[..., torch.Tensor | None]] = {"per_sample_rand": per_sample_rand}


# -- the transformer block ---------------------------------------------------------------------
# timm's ``vision_transformer.Block`` (pre-norm, fused attention, LayerScale, DropPath) with the same
# parameter names, construction order and random draws, so state dicts, seeded initialisation and
# results are unchanged; written here so that building a model does not import timm (and torchvision,
# ~220 MiB of resident memory) and so that the MLP can recompute its GELU in the backward pass.
class LayerScale(nn.Module):
    """``x * gamma`` with a learned per-channel ``gamma`` (timm ``LayerScale``)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth per sample (timm ``drop_path``: one Bernoulli draw per sample from the
    global generator, kept paths scaled by ``1 / keep``)."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        own = _DRAW["per_sample_rand"](x.shape[0], device=x.device)  # each sample's stream in training, if open
        if own is not None:
            mask = (own < keep).to(x.dtype).reshape(shape)
        else:
            mask = x.new_empty(shape).bernoulli_(keep)  # [B, 1, ...]
        if keep > 0.0:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (timm ``Attention``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = int(num_heads)
        self.head_dim = dim // self.num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        # [B, H, N, hd] views of the [B, N, 3C] projection (timm's reshape-permute-unbind, same strides):
        # through split the backward writes the three gradients into [B, N, 3C] with one copy, where
        # unbind's backward stacks them and the reshape copies them again
        q, k, v = (t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2) for t in self.qkv(x).split(c, dim=-1))
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class _GeluLinear(torch.autograd.Function):
    """``linear(gelu(h), weight, bias)`` that saves ``h`` only: ``gelu(h)`` is recomputed in the
    backward pass instead of being kept (one ``[tokens, hidden]`` tensor less per block)."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        a = F.gelu(h)
        out = F.linear(a, weight, bias)  # under autocast: in the autocast dtype, like nn.Linear
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        ctx.out_dtype = out.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, weight = ctx.saved_tensors
        grad = grad.to(ctx.out_dtype)
        w = weight.to(grad.dtype)
        g2 = grad.reshape(-1, grad.shape[-1])  # [T, out]
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.ops.aten.gelu_backward(grad.matmul(w).to(h.dtype), h)
        if ctx.needs_input_grad[1]:
            a = F.gelu(h).reshape(-1, h.shape[-1]).to(grad.dtype)  # [T, hidden]
            # [out, hidden], laid out like the weight (as nn.Linear's backward computes it): a
            # transposed result would be copied into the weight's layout when accumulated
            grad_w = g2.t().mm(a).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0).to(weight.dtype)
        return grad_h, grad_w, grad_b


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` (timm ``Mlp``); in training the GELU output is recomputed in backward."""

    def __init__(self, dim: int, hidden: int, act_layer: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if type(self.act) is nn.GELU and self.act.approximate == "none" and torch.is_grad_enabled():
            return _GeluLinear.apply(h, self.fc2.weight, self.fc2.bias)
        return self.fc2(self.act(h))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + dp(ls1(attn(norm1(x)))``, then ``x + dp(ls2(mlp(norm2(x))))``
    (timm ``vision_transformer.Block`` with ``qkv_bias``; same parameter names)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: float | None = None, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 act_layer: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1: nn.Module = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.ls2: nn.Module = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def block_call(block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """One block's forward, as a function of the block (what :func:`compiled_block_call` compiles)."""
    return block(x, attn_mask=attn_mask)


@functools.cache
def compiled_block_call(backend: str) -> Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """:func:`block_call` through ``torch.compile(backend=...)``: one compiled function for every block
    (regional compilation; the blocks' parameters are its inputs), never bound to a module, so a
    copied encoder (a teacher) runs its own weights and state-dict keys stay as they are."""
    compiled = torch.compile(block_call, backend=backend)
    _DRAW["per_sample_rand"] = torch.compiler.disable(per_sample_rand)
    return compiled


class UniversalEncoder(nn.Module):
    """One pre-norm ViT trunk (:class:`Block`: timm's ViT block, layer scale, bidirectional attention) shared by all
    modalities, plus the tokenizers of the run keyed by tokenizer name.

    Args:
        tokenizers: tokenizer modules by name (``patch_3d``, ``text_1d``...).
        depth, embed_dim, num_heads, mlp_ratio: trunk shape (see :data:`PRESETS`).
        drop_path: stochastic-depth rate, the same for every block.
        layer_scale_init: initial LayerScale value (1e-3 in MedCoSS).
        final_norm: add a LayerNorm after the last block (MedCoSS has none).
        legacy: attend to padded tokens (text) as the reference does: causal AND padding, additive
            -10000, with its batch-scrambled mask layout (
            :func:`medkit.models.legacy.legacy_text_attention_mask`). Images get no mask either way.
    """

    #: recompute each block's activations in the backward pass (``trainer.grad_checkpointing``)
    grad_checkpointing: bool = False
    #: run each block through ``torch.compile`` with this backend (``trainer.compile``); ``None``: eager
    compile_backend: str | None = None

    def __init__(self, tokenizers: Mapping[str, nn.Module], *, depth: int, embed_dim: int,
                 num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.1,
                 layer_scale_init: float = 1e-3, final_norm: bool = False, legacy: bool = False) -> None:
        super().__init__()
        if legacy and final_norm:
            raise ConfigError("encoder.legacy reproduces the reference, which has no final LayerNorm; "
                              "set encoder.final_norm=false")
        self.embed_dim = embed_dim
        self.num_heads = int(num_heads)
        self.legacy = bool(legacy)
        self.tokenizers = nn.ModuleDict(dict(tokenizers))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, init_values=layer_scale_init,
                  drop_path=drop_path, norm_layer=nn.LayerNorm, act_layer=nn.GELU)
            for _ in range(depth)
        ])
        self.norm: nn.Module = nn.LayerNorm(embed_dim) if final_norm else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        init_vit_weights([*self.blocks.modules(), *self.norm.modules()])

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def trunk_parameters(self) -> dict[str, nn.Parameter]:
        """The shared trunk's parameters (blocks and final norm), by name."""
        return {n: p for n, p in self.named_parameters() if n.startswith(("blocks.", "norm."))}

    def shared_parameters(self, tokenizers: Iterable[str] | None = None) -> dict[str, nn.Parameter]:
        """What every modality trains, by parameter name: the trunk (blocks, final norm) and the CLS
        token, plus the parameters of the named ``tokenizers`` (every tokenizer when ``None``; ``()``
        for the trunk and CLS token alone). Pretext heads are not part of the encoder.

        Strategies (EWC's penalty, PackNet's ownership…) select parameters through this method and
        :meth:`parameter_tokenizer`, never by spelling parameter names.
        """
        chosen = set(self.tokenizers) if tokenizers is None else set(tokenizers)
        return {n: p for n, p in self.named_parameters()
                if (tok := self.parameter_tokenizer(n)) is None or tok in chosen}

    @staticmethod
    def parameter_tokenizer(name: str) -> str | None:
        """The tokenizer an encoder parameter name belongs to, ``None`` for the shared trunk and CLS
        token (also for a name of a tokenizer this encoder does not build)."""
        parts = name.split(".")
        return parts[1] if len(parts) > 2 and parts[0] == "tokenizers" else None

    def trunk_linear_weights(self) -> dict[str, nn.Parameter]:
        """The ``weight`` of every ``nn.Linear`` of the trunk's blocks, by parameter name (what PackNet
        prunes)."""
        return {f"blocks.{n}.weight": cast(nn.Parameter, m.weight) for n, m in self.blocks.named_modules()
                if isinstance(m, nn.Linear)}

    def tokenize(self, tokenizer: str, inputs: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> Tokens:
        """Embed ``inputs`` with the named tokenizer."""
        if tokenizer not in self.tokenizers:
            raise ConfigError(f"the encoder has no tokenizer {tokenizer!r}; it has "
                              f"{', '.join(self.tokenizers) or 'none'}")
        return self.tokenizers[tokenizer](inputs, attention_mask)

    def forward_tokens(self, tokens: Tokens, *, ids_keep: torch.Tensor | None = None,
                       add_cls: bool = True, return_hidden: bool = False) -> EncoderOutput:
        """Run the trunk on ``tokens``, keeping only ``ids_keep`` (``[B, n]``) when given."""
        x, pad = tokens.x, tokens.padding_mask  # [B, N, D], [B, N]
        if ids_keep is not None:
            x = gather_tokens(x, ids_keep)  # [B, n, D]
            if pad is not None:
                pad = torch.gather(pad, 1, ids_keep)
        num_prefix = 0
        if add_cls:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if pad is not None:
                pad = torch.cat([pad.new_zeros(pad.shape[0], 1), pad], dim=1)
            num_prefix = 1
        attn_mask = None
        if self.legacy and pad is not None:
            attn_mask = legacy_text_attention_mask(pad, self.num_heads, x.dtype)  # [B, H, T, T]
        elif pad is not None and bool(pad.any()):
            attn_mask = torch.zeros(pad.shape, dtype=x.dtype, device=x.device)
            attn_mask = attn_mask.masked_fill(pad, float("-inf"))[:, None, None, :]  # [B, 1, 1, T]
        hidden: list[torch.Tensor] = []
        training = self.training and torch.is_grad_enabled()
        run = compiled_block_call(self.compile_backend) if self.compile_backend and training else block_call
        recompute = self.grad_checkpointing and training
        for block in self.blocks:
            if recompute:  # activations recomputed in backward, with the forward's random draws
                x = checkpoint(replayable(functools.partial(run, block)), x, attn_mask, use_reentrant=False)
            else:
                x = run(block, x, attn_mask)
            if return_hidden:
                hidden.append(x)
        x = self.norm(x)
        return EncoderOutput(x=x, padding_mask=pad, num_prefix=num_prefix, grid=tokens.grid, hidden=hidden)

    def forward(self, tokenizer: str, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *, ids_keep: torch.Tensor | None = None, return_hidden: bool = False) -> EncoderOutput:
        """Tokenize then encode; images get the CLS token prepended after masking."""
        tokens = self.tokenize(tokenizer, inputs, attention_mask)
        add_cls = bool(getattr(self.tokenizers[tokenizer], "adds_cls", True))
        return self.forward_tokens(tokens, ids_keep=ids_keep, add_cls=add_cls, return_hidden=return_hidden)


def count_parameters(module: nn.Module, prefix: str = "") -> int:
    """Number of parameters whose name starts with ``prefix``."""
    return sum(p.numel() for n, p in module.named_parameters() if n.startswith(prefix))


def interpolate_grid(table: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Resample a position table ``[1, D, *g0]`` to ``grid`` and flatten to ``[1, prod(grid), D]``.

    Used by tokenizers so that one table serves every input size (224² and 512², 16 or 64 slices).
    """
    if tuple(table.shape[2:]) != tuple(grid):
        mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[len(grid)]
        table = nn.functional.interpolate(table.float(), size=grid, mode=mode,
                                          align_corners=False).to(table.dtype)
    return table.flatten(2).transpose(1, 2)


def sincos_init(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """A fixed sin-cos table ``[1, D, *grid]`` used to initialise learned position tables."""
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float32) for g in grid], indexing="ij")
    n_axes = len(grid)
    per_axis = (dim // (2 * n_axes)) * 2
    parts = []
    for c in coords:
        omega = 1.0 / (10000 ** (torch.arange(per_axis // 2, dtype=torch.float32) / max(per_axis // 2, 1)))
        angles = c.reshape(-1, 1) * omega.reshape(1, -1)
        parts += [torch.sin(angles), torch.cos(angles)]
    table = torch.cat(parts, dim=1)
    if table.shape[1] < dim:
        table = torch.cat([table, torch.zeros(table.shape[0], dim - table.shape[1])], dim=1)
    return table.T.reshape(1, dim, *grid)


def init_vit_weights(modules: Iterable[nn.Module]) -> None:
    """MAE's initialisation, in order: Xavier-uniform Linear weights, zero biases, unit LayerNorms."""
    for m in modules:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
