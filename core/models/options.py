"""The ``encoder.*`` options of a config and their defaults: the shared ViT trunk's schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Optional


@dataclass
class EncoderConfig:
    """``encoder.*``: the shared ViT trunk (``null`` shape fields take the preset's value).

    The config layer types the ``encoder`` section with this class (``medkit.config.schemas``); it
    lives beside the model so that the model builder reads it without importing the config layer.
    """

    preset: str = "base"
    depth: Optional[int] = None
    embed_dim: Optional[int] = None
    num_heads: Optional[int] = None
    mlp_ratio: Optional[float] = None
    drop_path: float = 0.1
    layer_scale_init: float = 1e-3
    final_norm: bool = False
    # the reference's numerics, to use the official weights (medkit convert medcoss)
    legacy: bool = False


def encoder_options(cfg: Mapping[str, Any]) -> EncoderConfig:
    """``cfg["encoder"]`` (a composed config or a checkpoint's ``config.json``) as an
    :class:`EncoderConfig`: keys it lacks take the defaults above (a config from an older medkit),
    keys the class does not know are left out (they are kept in the plain config)."""
    values = cfg.get("encoder") or {}
    known = {f.name for f in fields(EncoderConfig)}
    return EncoderConfig(**{k: v for k, v in values.items() if k in known})
