"""Patch tokenizers for 2D images and 3D volumes with grid-aware learned positions."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence, cast

import torch
from torch import nn

from medkit.api import ConfigError, DataError, FlatPositions, Tokens, interpolate_grid, sincos_init, stack_inputs

log = logging.getLogger(__name__)

_AXES = {2: ("H", "W"), 3: ("D", "H", "W")}


def _ints(value: int | Sequence[int], n: int, what: str, name: str) -> tuple[int, ...]:
    """``value`` as ``n`` positive ints (an int is repeated); accepts lists from configs."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = (int(value),) * n
    else:
        out = tuple(int(v) for v in cast(Sequence[int], value))  # a bool fails here, as ever
    if len(out) != n or any(v <= 0 for v in out):
        raise ConfigError(f"tokenizer {name}: {what} must be {n} positive ints, got {value!r}; "
                          f"set tokenizer.{name}.{what} accordingly")
    return out


def _shape(t: Any) -> str:
    return "[" + ", ".join(str(int(s)) for s in t.shape) + "]" if isinstance(t, torch.Tensor) else type(t).__name__


class PatchTokenizer(nn.Module):
    """Cut ``[B, C, *S]`` into non-overlapping patches, embed them, add positions, normalise.

    Dimension-agnostic (``spatial_dims`` 2 or 3). Order of operations follows MedCoSS:
    patch convolution → tokens ``[B, N, D]`` flattened row-major over the grid → learned positions
    added → LayerNorm (eps 1e-5) → no dropout. The position table is stored at the grid of
    ``base_size`` (initialised from sin-cos) and resampled to any other grid, so 224² and 512²
    inputs (or 16 and 64 slices) see positions that mean the same place.

    Args:
        embed_dim: trunk width ``D`` (supplied by the engine).
        spatial_dims: 2 for ``[C, H, W]`` images, 3 for ``[C, D, H, W]`` volumes.
        in_chans: channels the patch convolution expects; 1-channel samples are replicated to
            ``in_chans`` by :meth:`collate` (grey X-rays fed to an RGB tokenizer).
        patch_size: patch edge (an int for cubic/square patches, or one int per spatial axis).
        base_size: input size whose grid the position table is stored at.
        name: registry name, used in error messages.
        legacy: the reference's positions instead: a flat table indexed by
            the row-major patch index plus a temporal row (random 0..7 per forward in ``train()``, 0 in
            ``eval()``), see :class:`medkit.models.legacy.FlatPositions`.
        legacy_position_rows: rows of that flat table (legacy only).
    """

    adds_cls = True

    def __init__(self, embed_dim: int, *, spatial_dims: int, in_chans: int,
                 patch_size: int | Sequence[int], base_size: Sequence[int], name: str,
                 legacy: bool = False, legacy_position_rows: int = 0) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"tokenizer {name}: spatial_dims must be 2 or 3, got {spatial_dims}")
        if int(in_chans) <= 0 or int(embed_dim) <= 0:
            raise ConfigError(f"tokenizer {name}: in_chans and embed_dim must be positive, "
                              f"got {in_chans} and {embed_dim}")
        self.name = name
        self.dims = spatial_dims
        self.embed_dim = int(embed_dim)
        self.in_chans = int(in_chans)
        self.patch_size = _ints(patch_size, spatial_dims, "patch_size", name)
        self.base_size = _ints(base_size, spatial_dims, "base_size", name)
        if any(s % p for s, p in zip(self.base_size, self.patch_size)):
            raise ConfigError(f"tokenizer {name}: base_size {list(self.base_size)} is not a multiple of "
                              f"patch_size {list(self.patch_size)}; change tokenizer.{name}.base_size")
        self.base_grid = tuple(s // p for s, p in zip(self.base_size, self.patch_size))
        conv: Callable[..., nn.Conv2d | nn.Conv3d] = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        # PyTorch's default conv init, as MedCoSS.
        self.proj = conv(self.in_chans, self.embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.legacy = bool(legacy)
        if self.legacy:
            self.pos = FlatPositions(legacy_position_rows, self.embed_dim, name=name)  # [R, D] + [8, D]
        else:
            self.pos_embed = nn.Parameter(sincos_init(self.embed_dim, self.base_grid))  # [1, D, *g0]
        self.norm = nn.LayerNorm(self.embed_dim)

    # -- shapes --------------------------------------------------------------------------
    @property
    def patch_dim(self) -> int:
        """Values per patch in :meth:`patchify` output: ``prod(patch_size) * in_chans``."""
        return math.prod(self.patch_size) * self.in_chans

    def expected(self, *, batch: bool = False) -> str:
        """The accepted sample (or, with ``batch``, batch) shape, for error messages."""
        axes = _AXES[self.dims]
        sizes = set(self.patch_size)
        if len(sizes) == 1:
            rule = f"{', '.join(axes)} multiples of {self.patch_size[0]}"
        else:
            rule = ", ".join(f"{a} multiple of {p}" for a, p in zip(axes, self.patch_size))
        if batch:
            return f"[B, {self.in_chans}, {', '.join(axes)}] with {rule}"
        grey = " (1-channel inputs are replicated)" if self.in_chans > 1 else ""
        return f"[{self.in_chans}, {', '.join(axes)}]{grey} with {rule}"

    def grid_of(self, inputs_shape: Sequence[int]) -> tuple[int, ...]:
        """Token grid ``(h, w)`` or ``(d, h, w)`` of a batch shape ``[B, C, *S]`` (or ``[C, *S]``)."""
        spatial = tuple(int(s) for s in inputs_shape[-self.dims:])
        return tuple(s // p for s, p in zip(spatial, self.patch_size))

    def _spatial_ok(self, spatial: Sequence[int]) -> bool:
        return all(s >= p and s % p == 0 for s, p in zip(spatial, self.patch_size))

    # -- batching ------------------------------------------------------------------------
    def collate(self, samples: Sequence[dict[str, Any]], modality: str) -> dict[str, torch.Tensor]:
        """Stack ``sample["input"]`` into ``{"inputs": [B, C, *S] float32}``.

        Every sample must be ``[C, *S]`` with ``C`` equal to ``in_chans`` (or 1, replicated to
        ``in_chans``), every spatial size a multiple of the patch size, and all samples the same size.

        Raises:
            DataError: naming the modality, the sample id, the shape got and the shape expected.
        """
        if not samples:
            raise DataError(f"modality {modality!r}: cannot collate an empty batch for tokenizer {self.name}")
        stacked: list[torch.Tensor] = []
        first: tuple[str, tuple[int, ...]] | None = None
        for i, sample in enumerate(samples):
            sid = str(sample.get("id", f"#{i}"))
            x = sample.get("input")
            where = f"modality {modality!r} sample {sid!r}"
            if not isinstance(x, torch.Tensor) or x.ndim != self.dims + 1 \
                    or int(x.shape[0]) not in (1, self.in_chans) or not self._spatial_ok(x.shape[1:]):
                raise DataError(f"{where}: got {_shape(x)}, expected {self.expected()}; fix the "
                                f"modality's preprocessing (crop/pad/resize) or tokenizer.{self.name} settings")
            if first is None:
                first = (sid, tuple(x.shape[1:]))
            elif tuple(x.shape[1:]) != first[1]:
                raise DataError(f"{where}: got {_shape(x)}, expected [C, {', '.join(map(str, first[1]))}] like "
                                f"sample {first[0]!r}; every sample of a batch must have the same size")
            stacked.append(x.to(torch.float32))
        # grey samples are repeated to in_chans; in medkit's DataLoader workers the batch goes into
        # a reused shared-memory buffer and grey crosses as one channel (Batch.to makes it whole)
        return {"inputs": stack_inputs(stacked, channels=self.in_chans)}  # [B, C, *S]

    # -- positions -----------------------------------------------------------------------
    def position_table(self, grid: Sequence[int]) -> torch.Tensor:
        """Positions of a ``grid``, ``[1, prod(grid), D]`` (the stored table, resampled if needed;
        in legacy mode the flat rows ``0..N-1`` plus the temporal row of this call)."""
        if self.legacy:
            return self.pos(math.prod(int(g) for g in grid), device=self.proj.weight.device,
                            dtype=self.proj.weight.dtype)
        return interpolate_grid(self.pos_embed, tuple(int(g) for g in grid))

    # -- forward -------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Tokens:
        """Embed ``inputs [B, C, *S]`` into ``Tokens(x [B, N, D], None, grid)``."""
        if inputs.ndim != self.dims + 2 or inputs.shape[1] != self.in_chans \
                or not self._spatial_ok(inputs.shape[2:]):
            raise DataError(f"tokenizer {self.name}: got inputs {_shape(inputs)}, expected "
                            f"{self.expected(batch=True)}; build batches with its collate()")
        x = self.proj(inputs)  # [B, D, *grid]
        grid = tuple(int(g) for g in x.shape[2:])
        x = x.flatten(2).transpose(1, 2)  # [B, N, D], row-major over (h, w) or (d, h, w)
        if self.legacy:  # flat rows 0..N-1 + one temporal row, summed in x's dtype as the reference
            pos = self.pos(x.shape[1], device=x.device, dtype=x.dtype)
        else:
            pos = self.position_table(grid).to(x.dtype)
        x = x + pos  # positions before the norm
        x = self.norm(x)  # [B, N, D]
        return Tokens(x=x, padding_mask=None, grid=grid)

    # -- pixel targets -------------------------------------------------------------------
    def patchify(self, inputs: torch.Tensor) -> torch.Tensor:
        """``[B, C, *S]`` → ``[B, N, prod(patch) * C]``.

        Layout per patch as MAE/MedCoSS: 2D ``(h, w, p, q, c)``, 3D
        ``(d, h, w, kd, kh, kw, c)``.
        """
        b, c = inputs.shape[:2]
        grid = self.grid_of(inputs.shape)
        split: list[int] = []
        for g, p in zip(grid, self.patch_size):
            split += [g, p]
        x = inputs.reshape(b, c, *split)  # [B, C, g0, p0, g1, p1, ...]
        n = self.dims
        grid_axes = [2 + 2 * k for k in range(n)]
        patch_axes = [3 + 2 * k for k in range(n)]
        x = x.permute(0, *grid_axes, *patch_axes, 1)  # [B, g0, g1, ..., p0, p1, ..., C]
        return x.reshape(b, math.prod(grid), math.prod(self.patch_size) * c)  # [B, N, P]

    def unpatchify(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """Inverse of :meth:`patchify`: ``[B, N, prod(patch) * C]`` on ``grid`` → ``[B, C, *S]``."""
        grid = tuple(int(g) for g in grid)
        b, n_tok, width = x.shape
        patch_vol = math.prod(self.patch_size)
        if n_tok != math.prod(grid) or width % patch_vol:
            raise DataError(f"tokenizer {self.name}: cannot unpatchify {_shape(x)} onto grid {list(grid)} "
                            f"with patch {list(self.patch_size)}; expected [B, {math.prod(grid)}, "
                            f"k * {patch_vol}]")
        c = width // patch_vol
        x = x.reshape(b, *grid, *self.patch_size, c)  # [B, g0, g1, ..., p0, p1, ..., C]
        n = self.dims
        order = [0, 1 + 2 * n]
        for k in range(n):
            order += [1 + k, 1 + n + k]
        x = x.permute(*order)  # [B, C, g0, p0, g1, p1, ...]
        return x.reshape(b, c, *(g * p for g, p in zip(grid, self.patch_size)))


class Patch2D(PatchTokenizer):
    """``patch_2d``: ``Conv2d(in_chans, D, 16, stride 16)`` on ``[B, C, H, W]``.

    The position table lives at the grid of ``base_size`` (224² → 14×14) and is resampled
    bicubically for other sizes (512² → 32×32, 1024 tokens). Grey ``[1, H, W]`` samples are
    replicated to ``in_chans`` channels in :meth:`collate`. With ``legacy`` the positions are the
    reference's flat ``legacy_position_rows``-row table ((512/16)² = 1024) + an 8-row temporal table.
    """

    def __init__(self, embed_dim: int, in_chans: int = 3, patch_size: int | tuple[int, ...] = 16,
                 base_size: tuple[int, ...] = (224, 224), legacy: bool = False,
                 legacy_position_rows: int = 1024) -> None:
        super().__init__(embed_dim, spatial_dims=2, in_chans=in_chans, patch_size=patch_size,
                         base_size=base_size, name="patch_2d", legacy=legacy,
                         legacy_position_rows=legacy_position_rows)


class Patch3D(PatchTokenizer):
    """``patch_3d``: ``Conv3d(in_chans, D, 16, stride 16)`` (cubic) on ``[B, C, D, H, W]``.

    The position table lives at the grid of ``base_size`` (16×192×192 → 1×12×12) and is resampled
    trilinearly for other sizes (64×192×192 → 4×12×12, 576 tokens). With ``legacy`` the positions
    are the reference's flat ``legacy_position_rows``-row table ((256/16)³ = 4096) + an 8-row
    temporal table.
    """

    def __init__(self, embed_dim: int, in_chans: int = 1, patch_size: int | tuple[int, ...] = 16,
                 base_size: tuple[int, ...] = (16, 192, 192), legacy: bool = False,
                 legacy_position_rows: int = 4096) -> None:
        super().__init__(embed_dim, spatial_dims=3, in_chans=in_chans, patch_size=patch_size,
                         base_size=base_size, name="patch_3d", legacy=legacy,
                         legacy_position_rows=legacy_position_rows)
