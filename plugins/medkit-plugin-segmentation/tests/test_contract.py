"""The segmentation task honours the task contract in 2D and 3D."""

from __future__ import annotations

from medkit.testing import TaskContract


class TestSegmentation(TaskContract):
    name = "segmentation"
    dims = (2, 3)
