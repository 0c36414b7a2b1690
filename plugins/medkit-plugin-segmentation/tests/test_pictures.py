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


def test_title_gives_each_class_where_classes_differ(tmp_path: Path) -> None:
    """A mean HD95 of 134.5 driven by one class says which class drives it."""
    from medkit_plugin_segmentation.pictures import metrics_title, overlays_png

    metrics = {"dice": 0.612, "hd95": 134.5, "dice/liver": 0.901, "dice/tumour": 0.323,
               "hd95/liver": 3.2, "hd95/tumour": 265.8}
    title = metrics_title(metrics, "test", three_d=True)
    lines = title.split("\n")
    assert lines[0] == "test split: Dice 0.612  HD95 134.50 voxels (middle slice shown)"
    assert lines[1].startswith("Dice per class") and "liver 0.901, tumour 0.323" in lines[1]
    assert lines[2].startswith("HD95 per class") and "liver 3.20, tumour 265.80" in lines[2]
    same = {"dice": 0.5, "hd95": 2.0, "dice/a": 0.5, "dice/b": 0.5, "hd95/a": 2.0, "hd95/b": 2.0}
    assert "\n" not in metrics_title(same, "val"), "classes that agree need no per-class line"
    image = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    mask = np.zeros((32, 32), dtype=np.int64)
    mask[8:20, 8:20] = 1
    mask[22:28, 22:28] = 2
    out = Path(os.environ.get("MEDKIT_PICTURES") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    path = overlays_png([{"id": "case-1", "image": image, "gt": mask, "pred": np.roll(mask, 2, axis=1)}],
                        ["background", "liver", "tumour"], out / "overlays_per_class.png", title=title)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
