"""Classification heads of supplement A.1 and the model that puts one on a backbone."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medkit.api import ConfigError

HEADS = ("auto", "one_layer", "two_layer")
POOLINGS = ("mean", "cls")
#: ``head="auto"``: reports and CT (and MRI) get the two-layer head, X-ray and pathology the one-layer head.
TWO_LAYER_MODALITIES = ("report", "ct", "mri")
ONE_LAYER_MODALITIES = ("xray", "pathology")


def resolve_head(head: str, modality: str, dims: int) -> str:
    """``one_layer`` or ``two_layer`` (``auto``: by modality, else 2D → one layer, 1D/3D → two)."""
    if head not in HEADS:
        raise ConfigError(f"task classification: head must be one of {', '.join(HEADS)}, got {head!r}")
    if head != "auto":
        return head
    if modality in TWO_LAYER_MODALITIES:
        return "two_layer"
    if modality in ONE_LAYER_MODALITIES:
        return "one_layer"
    return "one_layer" if dims == 2 else "two_layer"


def _init(module: nn.Module) -> None:
    """Fresh heads: xavier-uniform Linear weights, zero biases, LayerNorm weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class OneLayerHead(nn.Module):
    """``fc_norm`` LayerNorm(eps 1e-6) → Linear(D, C) (ChestXR, NCH)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc_norm(x))  # [B, C]


class TwoLayerHead(nn.Module):
    """[``fc_norm`` LayerNorm(eps 1e-6)] → Linear(D, D) → LayerNorm → GELU → Linear(D, C)
    (RICORD with ``fc_norm``, PubMed20k without)."""

    def __init__(self, dim: int, num_classes: int, fc_norm: bool = True) -> None:
        super().__init__()
        self.fc_norm: nn.Module = nn.LayerNorm(dim, eps=1e-6) if fc_norm else nn.Identity()
        self.fc1 = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(self.fc_norm(x)))))  # [B, C]


class Classifier(nn.Module):
    """``backbone`` → pooled features ``[B, D]`` (mean over patch / non-padding tokens, or CLS) →
    ``head`` → logits ``[B, C]``."""

    backbone: Any  # a fine-tuning backbone (medkit.finetune.backbones): pooled(), feature_maps(), dims...

    def __init__(self, backbone: nn.Module, head: nn.Module, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"task classification: pooling must be one of {', '.join(POOLINGS)}, "
                              f"got {pooling!r}")
        self.backbone, self.head, self.pooling = backbone, head, pooling

    def features(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone.pooled(inputs, attention_mask, pooling=self.pooling)  # [B, D]

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(inputs, attention_mask))


def build_head(kind: str, dim: int, num_classes: int, *, fc_norm: bool) -> nn.Module:
    if num_classes < 2:
        raise ConfigError(f"task classification needs at least 2 classes, got {num_classes}")
    if kind == "one_layer":
        return OneLayerHead(dim, num_classes)
    return TwoLayerHead(dim, num_classes, fc_norm=fc_norm)
