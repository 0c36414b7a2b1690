"""Read-time checks: degenerate sizes and non-finite values are refused with the file's name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medkit.api.errors import DataError
from medkit.data.checks import MIN_EDGE, check_edges, check_finite, nonfinite_counts


def test_edges_need_two_axes_of_min_edge() -> None:
    check_edges("a.nii", (MIN_EDGE, MIN_EDGE, 1))  # one thin axis is a short volume: fine
    check_edges("b.png", (MIN_EDGE, 500))
    for shape in ((1, 1, 1), (500, MIN_EDGE - 1, 3), (MIN_EDGE - 1, 500)):
        with pytest.raises(DataError, match=r"^c\.x: the volume is .* pixels"):
            check_edges("c.x", shape)


def test_nonfinite_counts_and_message() -> None:
    x = torch.zeros(4, 4)
    x[0, 0], x[1, 1], x[2, 2] = float("nan"), float("inf"), float("-inf")
    assert nonfinite_counts(x) == (1, 2) and nonfinite_counts(np.arange(4)) == (0, 0)
    with pytest.raises(DataError, match=r"^v\.nii: non-finite voxels: 1 NaN and 2 Inf of 16;"):
        check_finite("v.nii", x)
    check_finite("ok.nii", torch.ones(3))
