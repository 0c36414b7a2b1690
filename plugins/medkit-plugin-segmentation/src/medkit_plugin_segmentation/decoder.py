"""The UNETR-style decoder of supplement A.2, the model around it, and the ViT + CNN
fusion of supplement D."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from medkit.api import ConfigError


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return nn.functional.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class UNETRDecoder(nn.Module):
    """MONAI's UNETR decoder on four trunk feature maps at 1/16 resolution.

    * encoder1: ``UnetrBasicBlock`` on the raw image → ``feature_size`` channels (full resolution);
    * encoder2/3/4: ``UnetrPrUpBlock`` with 2/1/0 extra up-convolutions on the 1st/2nd/3rd map →
      2/4/8 × ``feature_size`` channels at 1/2, 1/4, 1/8;
    * decoder5..2: ``UnetrUpBlock`` from the last map (→ 8f, 4f, 2f, f) joining those skips;
    * out: ``UnetOutBlock`` (1×1 conv) → ``out_channels``.

    Maps whose channel count is not ``hidden_size`` (external CNNs) get a 1×1 projection, and maps
    not on the 1/16 grid are resampled to it.
    """

    def __init__(self, spatial_dims: int, in_channels: int, hidden_size: int, out_channels: int, *,
                 map_channels: Sequence[int] | None = None, feature_size: int = 16,
                 norm_name: str = "instance", res_block: bool = True, conv_block: bool = True) -> None:
        super().__init__()
        from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock

        f, h, d = int(feature_size), int(hidden_size), int(spatial_dims)
        conv = nn.Conv2d if d == 2 else nn.Conv3d
        self.proj = nn.ModuleList([nn.Identity() if int(c) == h else conv(int(c), h, kernel_size=1)
                                   for c in (map_channels or [h] * 4)])
        self.encoder1 = UnetrBasicBlock(d, in_channels, f, kernel_size=3, stride=1, norm_name=norm_name,
                                        res_block=res_block)
        self.encoder2, self.encoder3, self.encoder4 = (
            UnetrPrUpBlock(d, h, f * m, num_layer=n, kernel_size=3, stride=1, upsample_kernel_size=2,
                           norm_name=norm_name, conv_block=conv_block, res_block=res_block)
            for m, n in ((2, 2), (4, 1), (8, 0)))
        self.decoder5 = UnetrUpBlock(d, h, f * 8, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name,
                                     res_block=res_block)
        self.decoder4 = UnetrUpBlock(d, f * 8, f * 4, kernel_size=3, upsample_kernel_size=2,
                                     norm_name=norm_name, res_block=res_block)
        self.decoder3 = UnetrUpBlock(d, f * 4, f * 2, kernel_size=3, upsample_kernel_size=2,
                                     norm_name=norm_name, res_block=res_block)
        self.decoder2 = UnetrUpBlock(d, f * 2, f, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name,
                                     res_block=res_block)
        self.out = UnetOutBlock(d, f, out_channels)

    def forward(self, x_in: torch.Tensor, maps: Sequence[torch.Tensor], grid: Sequence[int]) -> torch.Tensor:
        z = [_resize(p(m), grid) for p, m in zip(self.proj, maps)]  # 4 × [B, h, *grid]
        enc1 = self.encoder1(x_in)  # [B, f, *S]
        enc2 = self.encoder2(z[0])  # [B, 2f, *S/2]
        enc3 = self.encoder3(z[1])  # [B, 4f, *S/4]
        enc4 = self.encoder4(z[2])  # [B, 8f, *S/8]
        dec3 = self.decoder5(z[3], enc4)  # [B, 8f, *S/8]
        dec2 = self.decoder4(dec3, enc3)  # [B, 4f, *S/4]
        dec1 = self.decoder3(dec2, enc2)  # [B, 2f, *S/2]
        out = self.decoder2(dec1, enc1)  # [B, f, *S]
        return self.out(out)  # [B, K, *S]


def check_patch(patch: Sequence[int]) -> tuple[int, ...]:
    patch = tuple(int(p) for p in patch)
    if not patch or any(p != 16 for p in patch):
        raise ConfigError(f"the UNETR decoder needs 16-voxel patches (four 2x up-samplings back to full "
                          f"resolution), but the backbone's patch is {list(patch)}")
    return patch


class SegmentationModel(nn.Module):
    """``backbone`` feature maps of ``blocks`` → :class:`UNETRDecoder`; or, when the backbone is a
    whole segmenter (``monai:<network>``), the backbone alone."""

    backbone: Any  # a fine-tuning backbone (medkit.finetune.backbones): pooled(), feature_maps(), dims...

    def __init__(self, backbone: nn.Module, decoder: UNETRDecoder | None, blocks: Sequence[int],
                 patch: Sequence[int]) -> None:
        super().__init__()
        self.backbone, self.decoder = backbone, decoder
        self.blocks, self.patch = list(blocks), tuple(patch)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            return self.backbone(inputs)
        grid = tuple(s // p for s, p in zip(inputs.shape[2:], self.patch))
        return self.decoder(inputs, self.backbone.feature_maps(inputs, self.blocks), grid)


class FusionSegmentationModel(nn.Module):
    """Supplement D (Fig. 2): a frozen pre-trained ViT and a learnable MONAI CNN.

    1. The ViT (``requires_grad=False``, always in ``eval()``) gives the maps of ``blocks`` on the
       1/16 grid; they are concatenated along channels (``4·D``), projected by a learnable 1×1 conv
       to ``fusion_channels`` and up-sampled (bilinear/trilinear) to the input size.
    2. The CNN (e.g. ``BasicUNet``), built with ``out_channels = fusion_channels``, gives its
       full-resolution decoder output — its last decoder features after its 1×1 output conv.
    3. Both are concatenated (``2·fusion_channels``) → ``UnetrBasicBlock`` (3×3 residual, instance
       norm) → ``UnetOutBlock`` (1×1 conv) → logits.
    Only the CNN, the projection and the fusion block are trained.
    """

    backbone: Any  # a fine-tuning backbone (medkit.finetune.backbones): pooled(), feature_maps(), dims...

    def __init__(self, backbone: nn.Module, cnn: nn.Module, blocks: Sequence[int], patch: Sequence[int], *,
                 spatial_dims: int, map_channels: Sequence[int], out_channels: int, fusion_channels: int = 32,
                 norm_name: str = "instance") -> None:
        super().__init__()
        from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock

        self.backbone, self.cnn = backbone, cnn
        self.blocks, self.patch = list(blocks), tuple(patch)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.vit_proj = conv(int(sum(map_channels)), fusion_channels, kernel_size=1)
        self.fuse = UnetrBasicBlock(spatial_dims, 2 * fusion_channels, fusion_channels, kernel_size=3, stride=1,
                                    norm_name=norm_name, res_block=True)
        self.out = UnetOutBlock(spatial_dims, fusion_channels, out_channels)
        self.backbone.eval()

    def train(self, mode: bool = True) -> FusionSegmentationModel:
        super().train(mode)
        self.backbone.eval()  # the frozen ViT never applies DropPath
        return self

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        grid = tuple(s // p for s, p in zip(inputs.shape[2:], self.patch))
        with torch.no_grad():
            maps = [_resize(m, grid) for m in self.backbone.feature_maps(inputs, self.blocks)]
        vit = _resize(self.vit_proj(torch.cat(maps, dim=1)), inputs.shape[2:])  # [B, F, *S]
        cnn = self.cnn(inputs)  # [B, F, *S]
        return self.out(self.fuse(torch.cat([cnn, vit], dim=1)))  # [B, K, *S]


def build_cnn(name: str, *, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """A ``monai.networks.nets`` CNN for the fusion (``UNet`` gets channels (16, 32, 64, 128) and
    strides (2, 2, 2); ``BasicUNet`` and others their defaults)."""
    import inspect

    import monai.networks.nets as nets

    cls = getattr(nets, name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ConfigError(f"task segmentation: fusion network {name!r} is not in monai.networks.nets "
                          f"(try BasicUNet, UNet, SegResNet)")
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels}
    if "channels" in params and params["channels"].default is inspect.Parameter.empty:
        kwargs.update(channels=(16, 32, 64, 128), strides=(2, 2, 2))
    try:
        return cls(**{k: v for k, v in kwargs.items() if k in params or k in ("channels", "strides")})
    except TypeError as exc:
        raise ConfigError(f"task segmentation: cannot build fusion network {name} ({exc})") from exc
