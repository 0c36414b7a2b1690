"""DeSD (Ye et al., MICCAI 2022; yeerwen/DeSD): the 3D ResNet-50 of ``models/res3d.py`` (instance norm,
LeakyReLU), loaded from the EMA ``teacher`` of the released ``DeSD_Res50.pth``, and the ResUNet built on
it for the ViT + CNN fusion of supplement D."""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import torch
from torch import nn

from medkit.api import ConfigError, ExternalBackbone, Family, StateDict, entry, load_into, resize_to, split_keys

#: ``res3d50``: Bottleneck blocks per stage.
LAYERS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm3d(c, affine=True)  # norm_cfg 'IN': affine, no running statistics


def _act() -> nn.Module:
    return nn.LeakyReLU(negative_slope=1e-2, inplace=True)


class Bottleneck(nn.Module):
    """``res3d.Bottleneck``: 1×1×1 → 3×3×3 (stride) → 1×1×1 ×4, each with instance norm; type-B shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.norm1 = _norm(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm2 = _norm(planes)
        self.conv3 = nn.Conv3d(planes, planes * EXPANSION, kernel_size=1, bias=False)
        self.norm3 = _norm(planes * EXPANSION)
        self.nonlin = _act()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.nonlin(self.norm1(self.conv1(x)))
        out = self.nonlin(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.nonlin(out + residual)


class ResNet3d(nn.Module):
    """``res3d.res3d`` at depth 50: 7×7×7 stem (stride 1, 2, 2), 3×3×3 max-pool (stride 2), four
    Bottleneck stages (strides 1, 2, 2, 2). Its ``state_dict`` has the released key names."""

    def __init__(self, in_channels: int = 1, layers: Sequence[int] = LAYERS) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, 64, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.norm1 = _norm(64)
        self.nonlin = _act()
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.inplanes = 64
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            self._make_layer(w, n, 1 if i == 0 else 2) for i, (w, n) in enumerate(zip(WIDTHS, layers)))
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * EXPANSION:
            downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes * EXPANSION, kernel_size=1, stride=stride,
                                                 bias=False), _norm(planes * EXPANSION))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * EXPANSION
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[stem, layer1, layer2, layer3, layer4]`` outputs (64, 256, 512, 1024, 2048 channels)."""
        stem = self.nonlin(self.norm1(self.conv1(x)))
        outs = [stem]
        x = self.maxpool(stem)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs


def check_size(inputs: torch.Tensor, who: str) -> None:
    """``layer4`` (stride 16 in depth, 32 in-plane) must keep more than one voxel for its instance norm."""
    d, h, w = (int(s) for s in inputs.shape[2:])
    if -(-d // 16) * -(-h // 32) * -(-w // 32) <= 1:
        raise ConfigError(f"{who}: inputs of {[d, h, w]} leave one voxel after ResNet-50's stride 16x32x32; use at "
                          f"least [16, 64, 64] (task.input_size / task.patch_size; DeSD pre-trained on 16x96x96)")


class DeSDBackbone(ExternalBackbone):
    """DeSD's ResNet-50: pooled features are the global average of ``layer4`` (2048, as the authors'
    ``gap``); the four stage maps are ``layer1..layer4``."""

    family = "desd"

    def __init__(self, dims: int = 3) -> None:
        super().__init__(dims=dims, in_chans=1, embed_dim=2048)
        self.net = ResNet3d(1)

    def stages(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        check_size(inputs, "backbone desd")
        return self.net(inputs)[1:]


def _up_block(cin: int, cout: int) -> nn.Sequential:
    """1×1×1 conv merging the concatenated features to ``cout``, then a 3×3×3 conv; instance norm and
    LeakyReLU after each (as the encoder)."""
    return nn.Sequential(nn.Conv3d(cin, cout, kernel_size=1, bias=False), _norm(cout), _act(),
                         nn.Conv3d(cout, cout, kernel_size=3, padding=1, bias=False), _norm(cout), _act())


class ResUNet(nn.Module):
    """DeSD's ResNet-50 encoder (``encoder.*``: the released keys) with a U-Net decoder: at each level
    the deeper features are up-sampled (trilinear) to the skip's size, concatenated with it and passed
    through a 1×1×1 and a 3×3×3 conv (each + instance norm + LeakyReLU); skips are ``layer3, layer2,
    layer1``, the stem, then the input itself, and a 1×1×1 conv gives ``out_channels``.

    The authors released the encoder only (their README's ``Decoder(skip_connection)`` is not public),
    so the decoder here is our own; it is trained from scratch in the fusion, as in supplement Fig. 2.
    """

    def __init__(self, out_channels: int, in_channels: int = 1, decoder: Sequence[int] = (256, 128, 64, 32, 16)
                 ) -> None:
        super().__init__()
        self.encoder = ResNet3d(in_channels)
        skips = (1024, 512, 256, 64)
        chans = [2048, *decoder]
        self.ups = nn.ModuleList([_up_block(chans[i] + skips[i], chans[i + 1]) for i in range(4)])
        self.final = _up_block(chans[4] + in_channels, chans[5])
        self.out = nn.Conv3d(chans[5], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(x, "task.fusion=desd")
        stem, l1, l2, l3, l4 = self.encoder(x)
        y = l4
        for block, skip in zip(self.ups, (l3, l2, l1, stem)):
            y = block(torch.cat([resize_to(y, skip.shape[2:]), skip], dim=1))
        y = self.final(torch.cat([resize_to(y, x.shape[2:]), x], dim=1))
        return self.out(y)


def map_keys(obj: Any, source: str) -> tuple[StateDict, dict[str, str]]:
    """``teacher`` (the README's choice; ``student`` if absent) → ``module.``/``backbone.`` stripped;
    the DINO projection heads (``head.*``; the student's ``head_1..3.*``) are dropped."""
    state = entry(obj, ["teacher", "student", None], source, "DeSD")
    rules: list[tuple[str, str | None, str]] = [("backbone.", "", ""),
                                                ("head.", None, "DINO projection head of pre-training")]
    rules += [(f"head_{i}.", None, "sub-encoder projection head of pre-training") for i in (1, 2, 3)]
    return split_keys(state, rules, source, "DeSD")


def build(dims: int) -> DeSDBackbone:
    if dims != 3:
        raise ConfigError(f"DeSD is a 3D model; the data are {dims}D")
    return DeSDBackbone(3)


def build_resunet(dims: int, in_channels: int, out_channels: int) -> ResUNet:
    if dims != 3:
        raise ConfigError(f"task.fusion=desd: DeSD's ResUNet is a 3D model; the data are {dims}D")
    if in_channels != 1:
        raise ConfigError(f"task.fusion=desd: DeSD's ResUNet takes 1-channel volumes, not {in_channels}")
    return ResUNet(out_channels, in_channels)


def build_fusion(dims: int, in_channels: int, out_channels: int, path: str | None) -> ResUNet:
    """The CNN branch of the ViT + CNN fusion (``task.fusion=desd:PATH``, supplement D): the ResUNet, its
    encoder filled from the released checkpoint at ``path`` (``None``: random initialisation)."""
    net = build_resunet(dims, in_channels, out_channels)
    if path:
        holder = DeSDBackbone()
        holder.net = net.encoder  # load_into fills the module the released keys address
        load_into(holder, FAMILY, path)
    return net


FAMILY = Family(name="desd", title="DeSD", repository="yeerwen/DeSD", dims=(3,), allowed=(argparse.Namespace,),
                build=build, map_keys=map_keys, release="DeSD_Res50.pth (entry 'teacher')",
                paper_params="3D ResNet-50 (the paper gives no count; the authors' res3d50 has 46.2 M)",
                fusion=build_fusion)
