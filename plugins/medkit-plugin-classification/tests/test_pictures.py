"""The confusion-matrix picture says which split it shows."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def test_confusion_picture_names_its_split(tmp_path: Path) -> None:
    from medkit_plugin_classification.task import ClassificationTask

    task = ClassificationTask(dims=2, modality="xray")
    evaluation = {"metrics": {"acc": 0.75, "auc": 0.8, "f1": 0.7}, "confusion": [[3, 1], [1, 3]], "split": "val"}
    out = Path(os.environ.get("MEDKIT_PICTURES") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    (path,) = task.pictures(evaluation, out, ["normal", "pneumonia"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from medkit_plugin_classification import pictures

    titles: list[str] = []
    real = pictures.confusion_png

    def spy(cm: np.ndarray, names: list[str], p: Path, **kw: str) -> Path:
        titles.append(kw.get("title", "") + " | " + kw.get("split", ""))
        return real(cm, names, p, **kw)

    pictures.confusion_png = spy  # type: ignore[assignment]
    try:
        task.pictures(evaluation, tmp_path, ["normal", "pneumonia"])
    finally:
        pictures.confusion_png = real  # type: ignore[assignment]
    assert titles == ["ACC 0.750  AUC 0.800  F1 0.700 | val"]  # confusion_png writes "val split, N samples"
