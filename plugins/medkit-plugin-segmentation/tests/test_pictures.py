"""The overlay picture names its split and gives HD95 a unit."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def test_overlay_title_has_split_and_hd95_unit(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from medkit_plugin_segmentation import pictures
    from medkit_plugin_segmentation.task import SegmentationTask

    task = SegmentationTask(dims=2, modality="xray", num_classes=2)
    image = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    mask = np.zeros((32, 32), dtype=np.int64)
    mask[8:20, 8:20] = 1
    evaluation = {"metrics": {"dice": 0.81, "hd95": 3.2}, "split": "test",
                  "examples": [{"id": "case-1", "image": image, "gt": mask, "pred": np.roll(mask, 2, axis=1)}]}
    seen: list[str] = []
    real = pictures.overlays_png
    monkeypatch.setattr(pictures, "overlays_png",
                        lambda ex, names, path, title="": seen.append(title) or real(ex, names, path, title=title))
    out = Path(os.environ.get("MEDKIT_PICTURES") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    (path,) = task.pictures(evaluation, out, ["background", "lesion"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen == ["test split: Dice 0.810  HD95 3.20 voxels"]
