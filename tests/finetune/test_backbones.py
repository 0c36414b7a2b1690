"""Backbones: the pre-trained medkit encoder (weights really loaded), feature maps, timm and MONAI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from medkit.storage.files import load_tensors
from medkit.api.errors import ConfigError
from medkit.finetune.backbones import (EncoderBackbone, MonaiBackbone, TimmBackbone, load_encoder,
                                            modality_info)
from medkit.finetune.config import component_defaults
from medkit.registry import get_host


def test_load_encoder_takes_the_runs_weights(pretrained_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = load_tensors(pretrained_run / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        enc = load_encoder(pretrained_run, ["patch_2d", "text_1d"],
                           defaults={"text_1d": component_defaults("tokenizer", "text_1d", get_host())},
                           create=get_host().create)
    own = enc.state_dict()
    for key in ("blocks.1.attn.qkv.weight", "cls_token", "tokenizers.patch_2d.proj.weight"):
        assert torch.equal(own[key], state[f"encoder.{key}"]), key
    assert "tokenizers.patch_3d.proj.weight" not in own  # only the tokenizers asked for
    assert "no trained tokenizer text_1d" in caplog.text


def test_feature_maps_are_token_grids_without_cls() -> None:
    from medkit.testing.tasks import tiny_backbone

    torch.manual_seed(0)
    bb = tiny_backbone(3).eval()
    x = torch.randn(1, 1, 16, 32, 48)
    maps = bb.feature_maps(x, [0, 1])
    assert [tuple(m.shape) for m in maps] == [(1, 48, 1, 2, 3)] * 2
    out = bb.encode(x, add_cls=False)
    assert out.num_prefix == 0
    assert torch.allclose(maps[1].flatten(2).transpose(1, 2), out.x, atol=1e-5)
    assert isinstance(bb, EncoderBackbone) and bb.default_blocks() == [0, 0, 1, 1]


def test_modality_info() -> None:
    assert modality_info("xray", get_host()) == (2, "patch_2d")
    assert modality_info("ct", get_host()) == (3, "patch_3d")


def test_timm_backbone_pooled_and_maps() -> None:
    bb = TimmBackbone("vit_tiny_patch16_224", dims=2, in_chans=3, img_size=[32, 32])
    x = torch.randn(2, 3, 32, 32)
    assert bb.pooled(x).shape == (2, 192) and bb.pooled(x, pooling="cls").shape == (2, 192)
    assert [tuple(m.shape) for m in bb.feature_maps(x, bb.default_blocks())] == [(2, 192, 2, 2)] * 4
    assert bb.default_blocks() == [3, 6, 9, 11]
    with pytest.raises(ConfigError, match="2D images"):
        TimmBackbone("vit_tiny_patch16_224", dims=3, in_chans=1, img_size=None)


@pytest.mark.slow
def test_external_backbones_finetune_through_the_same_task(medkit, tmp_path: Path) -> None:
    quick = ["trainer.batch_size=4", "trainer.val_every=1", "trainer.max_eval_samples=3"]
    res = medkit("finetune", "--task", "classification", "--modality", "xray", "--backbone",
                 "timm:vit_tiny_patch16_224", "--max-steps", "1", "--run-dir", str(tmp_path / "timm"), *quick)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "timm" / "pictures" / "confusion_matrix.png").is_file()
    res = medkit("finetune", "--task", "segmentation", "--modality", "xray", "--backbone", "monai:BasicUNet",
                 "--max-steps", "1", "--run-dir", str(tmp_path / "monai"), *quick)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "monai" / "pictures" / "overlays.png").is_file()


def test_monai_feature_backbone() -> None:
    bb = MonaiBackbone("DenseNet121", dims=2, in_chans=3, out_channels=32, segmenter=False)
    assert bb.pooled(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    assert bb.embed_dim == 32 and not bb.is_segmenter
