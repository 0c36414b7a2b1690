"""Known answers for the 2D view helpers: crop parameters, crop boxes, tensor conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medkit.data.image2d import crop_box, make_view, normalize, random_resized_crop_params, to_tensor


def test_random_resized_crop_params_respect_scale_and_ratio() -> None:
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        top, left, h, w = random_resized_crop_params(g, 224, (0.2, 1.0))
        assert 0 <= top and top + h <= 1 + 1e-9 and 0 <= left and left + w <= 1 + 1e-9
        area = h * w
        assert 0.2 - 0.02 <= area <= 1.0 + 1e-9
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05 or (h, w) == (1.0, 1.0)


def test_crop_box_known_answer() -> None:
    assert crop_box((10.0, 20.0, 110.0, 220.0), (0.25, 0.5, 0.5, 0.25)) == (60.0, 70.0, 85.0, 170.0)


def test_to_tensor_and_view_without_generator() -> None:
    img = Image.fromarray(np.full((6, 4), 51, np.uint8))
    view = make_view(img, (0.0, 0.0, 4.0, 6.0), 8, None)
    x = to_tensor(view)
    assert x.shape == (1, 8, 8) and torch.allclose(x, torch.full_like(x, 0.2), atol=1e-6)
    with pytest.raises(ValueError, match="normalize must be one of"):
        normalize(x, "minmax")
