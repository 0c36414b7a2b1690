"""Dice and HD95 on constructed masks with known answers, and the empty-mask conventions."""

from __future__ import annotations

import math

import pytest
import torch

from medkit_plugin_segmentation.metrics import (SegmentationMeter, channels_to_labels, dice_per_class,
                                                hd95_per_class, labels_to_channels, logits_to_channels)


def _mask(shape: tuple[int, ...], *points: tuple[int, ...]) -> torch.Tensor:
    m = torch.zeros(1, 1, *shape, dtype=torch.bool)
    for p in points:
        m[(0, 0, *p)] = True
    return m


def test_dice_known_answer() -> None:
    a = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    b = torch.zeros_like(a)
    a[0, 0, 2, 2:6] = True  # 4 pixels
    b[0, 0, 2, 4:8] = True  # 4 pixels, 2 shared -> 2*2/(4+4)
    assert float(dice_per_class(a, b)[0, 0]) == pytest.approx(0.5)
    assert float(dice_per_class(a, a)[0, 0]) == pytest.approx(1.0)


def test_hd95_points_2d_and_3d() -> None:
    # single pixels (5, 5) and (8, 9): a 3-4-5 triangle
    assert float(hd95_per_class(_mask((16, 16), (5, 5)), _mask((16, 16), (8, 9)))[0, 0]) == pytest.approx(5.0)
    # single voxels 2, 3, 6 apart: distance 7
    d = hd95_per_class(_mask((12, 12, 12), (1, 1, 1)), _mask((12, 12, 12), (3, 4, 7)))
    assert float(d[0, 0]) == pytest.approx(7.0)


def test_hd95_concentric_squares() -> None:
    """Edges of a 10x10 square inside a 16x16 square, 3 pixels apart: every inner edge pixel is 3
    from the outer edge; of the outer edge's 60 pixels, 48 are 3 away, 8 are sqrt(13) and the 4
    corners sqrt(18). The 95th percentile (linear interpolation, rank 0.95*59 = 56.05) falls on
    the corners, so HD95 = max(3, sqrt(18)) = 3*sqrt(2)."""
    inner = torch.zeros(1, 1, 30, 30, dtype=torch.bool)
    outer = torch.zeros_like(inner)
    inner[0, 0, 10:20, 10:20] = True
    outer[0, 0, 7:23, 7:23] = True
    assert float(hd95_per_class(inner, outer)[0, 0]) == pytest.approx(3 * math.sqrt(2), abs=1e-4)
    assert float(hd95_per_class(inner, outer, percentile=50)[0, 0]) == pytest.approx(3.0, abs=1e-4)


def test_empty_mask_conventions() -> None:
    empty = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    full = _mask((8, 8), (3, 3))
    assert float(hd95_per_class(empty, empty)[0, 0]) == 0.0
    assert float(hd95_per_class(empty, full)[0, 0]) == 500.0
    assert float(hd95_per_class(full, empty, empty_value=99.0)[0, 0]) == 99.0
    assert float(dice_per_class(empty, empty)[0, 0]) == 1.0
    assert float(dice_per_class(full, empty)[0, 0]) == 0.0


def test_channels_and_meter() -> None:
    label = torch.tensor([[[0, 1, 2, 2]]])  # [B=1, 1, 4] as a 2D map
    regions = labels_to_channels(label, 3, multilabel=True)  # liver (>=1), tumour (>=2)
    assert regions[0, :, 0].tolist() == [[False, True, True, True], [False, False, True, True]]
    assert channels_to_labels(regions, multilabel=True).tolist() == label.tolist()
    onehot = labels_to_channels(label, 3, multilabel=False)
    assert channels_to_labels(onehot, multilabel=False).tolist() == label.tolist()
    logits = torch.tensor([[[[2.0, -1.0]], [[-1.0, 3.0]]]])  # [1, 2, 1, 2]
    assert logits_to_channels(logits, multilabel=True)[0, :, 0].tolist() == [[True, False], [False, True]]
    meter = SegmentationMeter(["organ"])
    a = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    a[0, 0, 2, 2:6] = True
    meter.add(a, a)
    meter.add(torch.zeros_like(a), a)
    out = meter.result()
    assert out["dice"] == pytest.approx(0.5) and out["hd95"] == pytest.approx(250.0)
    assert out["dice/organ"] == pytest.approx(0.5)
