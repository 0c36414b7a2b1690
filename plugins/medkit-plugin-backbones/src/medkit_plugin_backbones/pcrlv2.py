"""PCRLv2 (Zhou et al., TPAMI 2023; RL4M/PCRLv2): the 2D ResNet-18 encoder pre-trained on CheXpert (timm's
``resnet18``, key for key the ``segmentation_models_pytorch`` encoder the authors save) and the 3D
encoder of ``PCRLv23d`` pre-trained on LUNA (``models/pcrlv2_model_3d.py``)."""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from medkit.api import ConfigError, ExternalBackbone, Family, StateDict, entry, split_keys


class PCRLv2Backbone2D(ExternalBackbone):
    """The CheXpert ResNet-18 (3-channel input, batch norm): pooled features are the average of
    ``layer4`` (512; smp's ``aux_params`` pooling ``avg``); stage maps ``layer1..layer4``."""

    family = "pcrlv2-2d"

    def __init__(self) -> None:
        import timm

        super().__init__(dims=2, in_chans=3, embed_dim=512)
        self.net = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=3)

    def stages(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        n: Any = self.net  # a timm ResNet: its stages are timm's attributes
        x = n.maxpool(n.act1(n.bn1(n.conv1(inputs))))
        outs = []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            x = layer(x)
            outs.append(x)
        return outs


class LUConv(nn.Module):
    """``pcrlv2_model_3d.LUConv`` with ``norm='bn'``, ``act='relu'``: 3×3×3 conv (bias) → BN → ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm3d(cout, momentum=0.1, affine=True)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.bn1(self.conv1(x)))


class DownTransition(nn.Module):
    """``DownTransition(in, depth)``: two LUConvs to ``32·2^depth`` then ``64·2^depth`` channels."""

    def __init__(self, cin: int, depth: int) -> None:
        super().__init__()
        self.ops = nn.Sequential(LUConv(cin, 32 * 2 ** depth), LUConv(32 * 2 ** depth, 64 * 2 ** depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x)


class PCRLv2Encoder3D(nn.Module):
    """The encoder half of ``PCRLv23d`` (Models Genesis' 3D U-Net): ``down_tr64/128/256/512`` with
    2×2×2 max-pooling between them. Its ``state_dict`` has the released names of those keys."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.maxpool = nn.MaxPool3d(2)
        self.down_tr64 = DownTransition(in_channels, 0)
        self.down_tr128 = DownTransition(64, 1)
        self.down_tr256 = DownTransition(128, 2)
        self.down_tr512 = DownTransition(256, 3)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s64 = self.down_tr64(x)
        s128 = self.down_tr128(self.maxpool(s64))
        s256 = self.down_tr256(self.maxpool(s128))
        return [s64, s128, s256, self.down_tr512(self.maxpool(s256))]


class PCRLv2Backbone3D(ExternalBackbone):
    """The LUNA encoder: pooled features are the average of ``down_tr512`` (512, as the authors'
    ``avg_pool``); stage maps the four ``down_tr`` outputs (full, 1/2, 1/4, 1/8 resolution)."""

    family = "pcrlv2-3d"

    def __init__(self) -> None:
        super().__init__(dims=3, in_chans=1, embed_dim=512)
        self.net = PCRLv2Encoder3D(1)

    def stages(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        return self.net(inputs)


def map_keys_2d(obj: Any, source: str) -> tuple[StateDict, dict[str, str]]:
    """``state_dict`` (smp's ResNet-18 encoder: torchvision names, no ``fc``) → timm ``resnet18``, 1:1."""
    state = entry(obj, ["state_dict", None], source, "PCRLv2 (CheXpert)")
    rules: list[tuple[str, str | None, str]] = [
        (p, p, "") for p in ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")]
    rules += [("fc.", None, "ImageNet classifier (not pre-trained)")]
    return split_keys(state, rules, source, "PCRLv2 (CheXpert)")


def map_keys_3d(obj: Any, source: str) -> tuple[StateDict, dict[str, str]]:
    """``state_dict`` of ``PCRLv23d``: ``down_tr*`` kept; the pretext decoder (``up_tr*``, ``out_tr``:
    no skip connections, projection and deep-supervision heads) dropped."""
    state = entry(obj, ["state_dict", None], source, "PCRLv2 (LUNA)")
    rules: list[tuple[str, str | None, str]] = [(f"down_tr{c}.", f"down_tr{c}.", "") for c in (64, 128, 256, 512)]
    rules += [(f"up_tr{c}.", None, "pretext decoder of pre-training") for c in (64, 128, 256)]
    rules += [("out_tr.", None, "pretext reconstruction output of pre-training")]
    return split_keys(state, rules, source, "PCRLv2 (LUNA)")


def build_2d(dims: int) -> PCRLv2Backbone2D:
    if dims != 2:
        raise ConfigError(f"PCRLv2 (CheXpert) is a 2D model; the data are {dims}D")
    return PCRLv2Backbone2D()


def build_3d(dims: int) -> PCRLv2Backbone3D:
    if dims != 3:
        raise ConfigError(f"PCRLv2 (LUNA) is a 3D model; the data are {dims}D")
    return PCRLv2Backbone3D()


FAMILY_2D = Family(name="pcrlv2-2d", title="PCRLv2 (CheXpert)", repository="RL4M/PCRLv2", dims=(2,),
                   allowed=(argparse.Namespace,), build=build_2d, map_keys=map_keys_2d,
                   release="simance_multi_crop_chexpter_pretask_1.0_240.pt (entry 'state_dict')",
                   paper_params="ResNet-18 encoder (11.2 M without its classifier; the paper gives no count)")
FAMILY_3D = Family(name="pcrlv2-3d", title="PCRLv2 (LUNA)", repository="RL4M/PCRLv2", dims=(3,),
                   allowed=(argparse.Namespace,), build=build_3d, map_keys=map_keys_3d,
                   release="simance_multi_crop_luna_pretask_1.0_240.pt (entry 'state_dict')",
                   paper_params="3D U-Net of Models Genesis (the whole PCRLv23d: 17.1 M; the paper gives no count)")
