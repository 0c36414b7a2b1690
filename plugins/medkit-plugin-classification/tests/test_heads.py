"""Heads of supplement A.1, their automatic choice, and pooling that ignores text padding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medkit.api import ConfigError
from medkit.testing import tiny_backbone
from medkit_plugin_classification.heads import (Classifier, OneLayerHead, TwoLayerHead, build_head,
                                               resolve_head)


def test_head_structures() -> None:
    one = build_head("one_layer", 48, 3, fc_norm=True)
    assert isinstance(one, OneLayerHead) and one.fc_norm.eps == 1e-6
    assert [type(m) for m in one.children()] == [nn.LayerNorm, nn.Linear]
    two = build_head("two_layer", 48, 5, fc_norm=True)
    assert isinstance(two, TwoLayerHead) and two.fc1.weight.shape == (48, 48) and two.fc2.weight.shape == (5, 48)
    assert isinstance(two.act, nn.GELU) and isinstance(two.norm, nn.LayerNorm)
    assert isinstance(build_head("two_layer", 48, 5, fc_norm=False).fc_norm, nn.Identity)
    assert float(two.fc1.bias.detach().abs().sum()) == 0.0  # fresh heads: zero biases
    with pytest.raises(ConfigError, match="2 classes"):
        build_head("one_layer", 48, 1, fc_norm=True)


def test_auto_head_by_modality() -> None:
    assert resolve_head("auto", "report", 1) == "two_layer"
    assert resolve_head("auto", "ct", 3) == "two_layer"
    assert resolve_head("auto", "xray", 2) == "one_layer"
    assert resolve_head("auto", "pathology", 2) == "one_layer"
    assert resolve_head("auto", "somethingelse", 2) == "one_layer"
    assert resolve_head("one_layer", "ct", 3) == "one_layer"
    with pytest.raises(ConfigError):
        resolve_head("three_layer", "ct", 3)


def test_image_pooling_mean_excludes_cls_and_cls_option() -> None:
    torch.manual_seed(0)
    bb = tiny_backbone(2).eval()
    x = torch.randn(2, 3, 32, 32)
    out = bb.encode(x)
    assert out.num_prefix == 1
    assert torch.allclose(bb.pooled(x), out.x[:, 1:].mean(dim=1), atol=1e-6)
    assert torch.allclose(bb.pooled(x, pooling="cls"), out.x[:, 0], atol=1e-6)
    model = Classifier(bb, build_head("one_layer", 48, 3, fc_norm=True))
    assert model(x).shape == (2, 3)


def test_text_pooling_ignores_padding() -> None:
    from medkit.testing import get_host

    if "text_1d" not in get_host().names("tokenizer"):
        pytest.skip("tokenizer text_1d is not registered")
    torch.manual_seed(0)
    bb = tiny_backbone(1).eval()
    parts = bb.collate([{"input": "no acute cardiopulmonary process", "id": "a"}], "report")
    ids, mask = parts["inputs"], parts["attention_mask"]
    assert int(mask.sum()) < ids.shape[1], "the sample must have padding"
    garbage = ids.clone()
    garbage[mask == 0] = 7  # change every padding token, keep the mask
    a = bb.pooled(ids, mask)
    b = bb.pooled(garbage, mask)
    assert torch.allclose(a, b, atol=1e-5), "padding must not reach the pooled features"
    c = bb.pooled(garbage, torch.ones_like(mask))
    assert not torch.allclose(a, c, atol=1e-4), "without the mask the padding would matter"
