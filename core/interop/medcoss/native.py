"""``medkit convert medcoss --to native``: a legacy (official-layout) run → the corrected, non-legacy layout.

The legacy patch tokenizers add ``spatial[i] + temporal[t]`` (a flat table indexed by the row-major
patch index, ``t = 0`` in ``eval()``); the native ones add a grid-aware table
``pos_embed [1, D, *g0]`` stored at ``base_size // patch_size``. At that grid the two are the same
function once ``pos_embed[:, :, h, w] = spatial[h·W + w] + temporal[0]``, so a native model built
from the folded tables gives the legacy model's eval-mode image features exactly (to float
rounding). At any other grid the native table is resampled where the legacy one reuses flat rows
for other places, so the two differ there, by design.

Text: the legacy ``type_embed`` row 0 (added to every token) is folded into the position rows
``0..max_length-1`` and the token table / MLM decoder are cut to the vocabulary's own pieces, but the
native encoder attends bidirectionally with a per-sample padding mask where the legacy one is causal
with the reference's scrambled mask, so text features are *not* reproduced.
"""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from medkit.api.components import Components, Create
from medkit.api.errors import CheckpointError, ConfigError

PATCH_TOKENIZERS = ("patch_2d", "patch_3d")


def native_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with ``encoder.legacy`` and every tokenizer's ``legacy`` set to false."""
    out = copy.deepcopy(cfg)
    if not out.get("encoder", {}).get("legacy"):
        raise ConfigError("convert --to native: the run is not a legacy run (encoder.legacy is false); "
                          "it already has the native layout")
    out["encoder"]["legacy"] = False
    for params in out.get("tokenizer", {}).values():
        if isinstance(params, dict) and "legacy" in params:
            params["legacy"] = False
    return out


def _grid(params: dict[str, Any], dims: int) -> tuple[int, ...]:
    def ints(v: Any) -> list[int]:
        return [int(v)] * dims if isinstance(v, (int, float)) else [int(x) for x in v]

    base, patch = ints(params["base_size"]), ints(params["patch_size"])
    return tuple(b // p for b, p in zip(base, patch))


def fold_patch_positions(spatial: torch.Tensor, temporal: torch.Tensor, grid: tuple[int, ...], *,
                         name: str) -> torch.Tensor:
    """``pos_embed [1, D, *grid]`` with ``pos_embed[..., idx] = temporal[0] + spatial[flat(idx)]``
    (the legacy eval-mode sum, in its order), ``flat`` the row-major index."""
    n = math.prod(grid)
    if n > spatial.shape[0]:
        raise CheckpointError(f"convert --to native: tokenizer {name} folds a {list(grid)} grid ({n} positions) "
                              f"but the flat table has {spatial.shape[0]} rows; lower tokenizer.{name}.base_size")
    table = temporal[0][None, :] + spatial[:n]  # [N, D]
    return table.transpose(0, 1).reshape(1, table.shape[1], *grid).contiguous()  # [1, D, *grid]


def native_tensors(cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
                   expected: dict[str, tuple[int, ...]]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The native model's tensors (keys and shapes of ``expected``) from a legacy model's ``tensors``.

    Returns:
        ``(tensors, folded)``; ``folded`` maps each legacy key that was folded or cut to its target.

    Raises:
        CheckpointError: a native key has no legacy source, or a shape that cannot be derived.
    """
    out: dict[str, torch.Tensor] = {}
    folded: dict[str, str] = {}
    tok_cfg = cfg.get("tokenizer", {})
    for name in PATCH_TOKENIZERS:
        key = f"encoder.tokenizers.{name}.pos_embed"
        if key not in expected:
            continue
        sp, tm = f"encoder.tokenizers.{name}.pos.spatial.weight", f"encoder.tokenizers.{name}.pos.temporal.weight"
        if sp not in tensors or tm not in tensors:
            raise CheckpointError(f"convert --to native: the legacy model has no {sp} / {tm} to fold into {key}")
        grid = _grid(tok_cfg[name], 2 if name == "patch_2d" else 3)
        out[key] = fold_patch_positions(tensors[sp].float(), tensors[tm].float(), grid, name=name)
        folded[sp] = folded[tm] = key
    text = "encoder.tokenizers.text_1d."
    if f"{text}pos_embed.weight" in expected and f"{text}type_embed.weight" in tensors:
        rows = expected[f"{text}pos_embed.weight"][0]
        out[f"{text}pos_embed.weight"] = (tensors[f"{text}pos_embed.weight"][:rows].float()
                                          + tensors[f"{text}type_embed.weight"][0].float()[None])
        folded[f"{text}type_embed.weight"] = folded[f"{text}pos_embed.weight"] = f"{text}pos_embed.weight"
    for key, shape in expected.items():
        if key in out:
            continue
        value = tensors.get(key)
        if value is None:
            raise CheckpointError(f"convert --to native: the native model needs {key} {list(shape)} but the "
                                  f"legacy run has no such tensor; the run is not a converted MedCoSS run")
        if tuple(value.shape) != tuple(shape):
            cut = len(shape) == value.ndim and shape[0] <= value.shape[0] and tuple(shape[1:]) == tuple(value.shape[1:])
            if not cut:
                raise CheckpointError(f"convert --to native: {key} has shape {list(value.shape)} in the legacy "
                                      f"run but {list(shape)} in the native model, and it is not a table to cut")
            value = value[: shape[0]]  # the legacy token table / MLM rows beyond the vocabulary: never used
            folded[key] = f"{key} (first {shape[0]} rows)"
        out[key] = value.clone()
    return out, folded


def to_native(cfg: dict[str, Any], tensors: dict[str, torch.Tensor], *, create: Create,
              assets_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, str]]:
    """``(native config, native tensors, folded)`` of a legacy run's config and ``model.safetensors``."""
    from medkit.interop.medcoss.convert import _build_head
    from medkit.models.build import build_model

    ncfg = native_config(cfg)
    with torch.device("meta"):
        encoder = build_model(ncfg, create=create, with_heads=False, assets_dir=assets_dir).encoder
    expected = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    for m in ncfg["run"]["modalities"]:
        if any(k.startswith(f"heads.{m}.") for k in tensors):
            head = _build_head(ncfg, m, encoder, create)
            expected.update({f"heads.{m}.{k}": tuple(v.shape) for k, v in head.state_dict().items()})
    out, folded = native_tensors(cfg, tensors, expected)
    return ncfg, out, folded


def write_native(legacy_run: str | Path, out_dir: str | Path, *, components: Components) -> dict[str, str]:
    """Write the native run ``out_dir`` from the converted legacy run ``legacy_run``.

    ``model.safetensors`` holds the native tensors (:func:`to_native`), ``config.yaml`` the native
    config, ``tokenizers/`` the legacy run's assets, and ``manifest.json`` the legacy manifest with
    ``native_from`` (the legacy run and what was folded) and this run's file hashes.

    Returns:
        ``folded``: legacy key → native key.
    """
    from medkit.config.compose import config_hash, from_yaml, to_yaml
    from medkit.interop.medcoss.convert import _write_safetensors
    from medkit.models.build import architecture
    from medkit.storage import files as ck

    src, out = Path(legacy_run), Path(out_dir)
    cfg = from_yaml((src / "config.yaml").read_text(encoding="utf-8"))
    tensors = ck.load_tensors(src / "model.safetensors")
    ncfg, native, folded = to_native(cfg, tensors, create=components.create, assets_dir=src)
    manifest = ck.read_json(src / "manifest.json")
    with ck.staged_directory(out) as staging:
        if (src / "tokenizers").is_dir():
            shutil.copytree(src / "tokenizers", staging / "tokenizers")
        _write_safetensors(staging / "model.safetensors", native, {"format": "medkit-1", "source": "medcoss-native"})
        ck.atomic_write_text(staging / "config.yaml", to_yaml(ncfg))
        ck.atomic_write_json(staging / "config.json", architecture(ncfg))
        manifest.update({
            "config_hash": config_hash(ncfg), "converted_by": "medkit convert medcoss --to native",
            "native_from": {"folded": folded, "note": "eval-mode image features equal the legacy model's at "
                            "each patch tokenizer's base_size grid; text attention is the corrected one"},
            "files": {rel: ck.sha256_file(staging / rel)
                      for rel in ("model.safetensors", "config.json", "config.yaml")},
        })
        ck.atomic_write_json(staging / "manifest.json", manifest)
    return folded
