"""The UNETR decoder's shapes, its block choice, sliding windows, external backbones and fusion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medkit.api import ConfigError, default_blocks
from medkit.testing import MonaiBackbone, tiny_backbone
from medkit_plugin_segmentation.decoder import FusionSegmentationModel, UNETRDecoder


def test_default_blocks_scale_with_depth() -> None:
    assert default_blocks(12) == [3, 6, 9, 11]  # blocks 4, 7, 10, 12
    assert default_blocks(4) == [0, 1, 2, 3]
    assert default_blocks(2) == [0, 0, 1, 1]
    assert default_blocks(24) == [7, 13, 19, 23]


@pytest.mark.parametrize("dims,size", [(2, (32, 48)), (3, (16, 32, 32))])
def test_decoder_output_shape(dims: int, size: tuple[int, ...]) -> None:
    dec = UNETRDecoder(dims, 1, 48, 3)
    grid = tuple(s // 16 for s in size)
    maps = [torch.randn(2, 48, *grid) for _ in range(4)]
    assert dec(torch.randn(2, 1, *size), maps, grid).shape == (2, 3, *size)
    projected = UNETRDecoder(dims, 1, 48, 3, map_channels=[8, 16, 32, 64])
    maps = [torch.randn(2, c, *(g * 2 for g in grid)) for c in (8, 16, 32, 64)]  # other scale, other width
    assert projected(torch.randn(2, 1, *size), maps, grid).shape == (2, 3, *size)


def _task(**options):
    from medkit.testing import create

    return create("task", "segmentation", dims=2, modality="xray", **options)


def test_sliding_window_covers_large_inputs() -> None:
    task = _task(patch_size=[16, 16])
    seen: list[tuple[int, ...]] = []

    def model(x: torch.Tensor) -> torch.Tensor:
        seen.extend([tuple(x.shape[2:])] * x.shape[0])
        return torch.ones(x.shape[0], 2, *x.shape[2:])

    out = task.predict(model, torch.zeros(1, 3, 40, 40))
    assert out.shape == (1, 2, 40, 40)
    assert seen and all(s == (16, 16) for s in seen)
    assert len(seen) == 16  # 16-pixel tiles every 8 pixels (50 % overlap): 4 x 4 windows over 40 x 40
    small = task.predict(model, torch.zeros(1, 3, 20, 20))  # padded up to the tile, cropped back
    assert small.shape == (1, 2, 20, 20)


def test_monai_backbone_is_a_whole_segmenter() -> None:
    task = _task()
    bb = MonaiBackbone("BasicUNet", dims=2, in_chans=3, out_channels=2, segmenter=True)
    model = task.build_model(bb, ["background", "foreground"])
    assert model.decoder is None and model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(ConfigError, match="did you mean"):
        MonaiBackbone("BasicUNett", dims=2, in_chans=3, out_channels=2, segmenter=True)


def test_fusion_trains_the_cnn_and_freezes_the_vit() -> None:
    torch.manual_seed(0)
    task = _task(fusion="BasicUNet", fusion_channels=8)
    bb = tiny_backbone(2)
    model = task.build_model(bb, ["background", "foreground"])
    assert isinstance(model, FusionSegmentationModel)
    model.train()
    assert not model.backbone.training and model.cnn.training
    x = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    out = model(x)
    assert out.shape == (2, 2, 32, 32)
    out.mean().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.vit_proj.weight.grad is not None and any(p.grad is not None for p in model.cnn.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())


def test_patch_and_block_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiples of 16"):
        _task(patch_size=[20, 20])
    task = _task(blocks=[0, 1, 5, 1])
    with pytest.raises(ConfigError, match="blocks must be 4 indices"):
        task.build_model(tiny_backbone(2), ["background", "foreground"])
    from medkit.testing import create

    with pytest.raises(ConfigError, match="2D or 3D"):
        create("task", "segmentation", dims=1, modality="report")
