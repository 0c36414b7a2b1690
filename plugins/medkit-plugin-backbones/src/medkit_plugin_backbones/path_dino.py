"""Path_DINO: the ViT-S/16 pre-trained with DINO on 19M TCGA pathology patches (Kang et al., CVPR 2023;
lunit-io/benchmark-ssl-pathology, ``dino_vit_small_patch16_ep200.torch``), exactly the timm
``VisionTransformer(img_size=224, patch_size=16, embed_dim=384, num_heads=6, num_classes=0)`` the authors
load it into; other input sizes interpolate the position table (timm's ``dynamic_img_size``)."""

from __future__ import annotations

from typing import Any, Sequence, cast

import torch

from medkit.api import ConfigError, ExternalBackbone, Family, StateDict, default_blocks, entry, split_keys


class PathDINOBackbone(ExternalBackbone):
    """The ViT-S/16 trunk: pooled features are the mean of the patch tokens after the final norm
    (``pooling=cls``: the class token); feature maps are block outputs on the 1/16 grid."""

    family = "path-dino"

    def __init__(self) -> None:
        from timm.models.vision_transformer import VisionTransformer

        super().__init__(dims=2, in_chans=3, embed_dim=384)
        self.net = VisionTransformer(img_size=224, patch_size=16, embed_dim=384, num_heads=6, num_classes=0,
                                     dynamic_img_size=True)
        self.depth = len(self.net.blocks)

    def default_blocks(self) -> list[int]:
        return default_blocks(self.depth)

    def pooled(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
               pooling: str = "mean") -> torch.Tensor:
        tokens = self.net.forward_features(inputs)  # [B, 1 + N, 384]
        return tokens[:, 0] if pooling == "cls" else tokens[:, self.net.num_prefix_tokens:].mean(dim=1)

    def feature_maps(self, inputs: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        bad = [b for b in blocks if not 0 <= int(b) < self.depth]
        if bad:
            raise ConfigError(f"backbone path-dino has blocks 0..{self.depth - 1}; task.blocks asks for {bad}")
        maps = self.net.forward_intermediates(inputs, indices=[int(b) for b in blocks], intermediates_only=True)
        return list(cast(list[torch.Tensor], maps))  # intermediates_only: the list alone


def map_keys(obj: Any, source: str) -> tuple[StateDict, dict[str, str]]:
    """The release is a bare timm state dict (kept 1:1). A DINO training checkpoint (``teacher`` /
    ``student`` with ``backbone.`` keys) is accepted too; its projection ``head.*`` is dropped."""
    state = entry(obj, [None, "teacher", "student"], source, "Path_DINO")
    rules: list[tuple[str, str | None, str]] = [("backbone.", "", ""),
                                                ("head.", None, "DINO projection head of pre-training")]
    if not any(k.startswith(("backbone.", "module.backbone.")) for k in state):
        rules = [("", "", "")]  # the released bare state dict: names are timm's already
    return split_keys(state, rules, source, "Path_DINO")


def build(dims: int) -> PathDINOBackbone:
    if dims != 2:
        raise ConfigError(f"Path_DINO is a 2D model; the data are {dims}D")
    return PathDINOBackbone()


FAMILY = Family(name="path-dino", title="Path_DINO", repository="lunit-io/benchmark-ssl-pathology", dims=(2,),
                allowed=(), build=build, map_keys=map_keys, release="dino_vit_small_patch16_ep200.torch",
                paper_params="ViT-S/16, 21.7 M (the paper: ViT-S, 22 M)")
