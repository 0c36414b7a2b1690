"""Fine-tuning keeps a labelled image that ``input_size`` stretches far (pre-training would skip
it) and says so, naming the files, their factor and ``task.max_upsample``; with the limit set, such
images are skipped with a reason."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from medkit.api import ConfigError
from medkit_plugin_classification.readers import ReaderOptions, read_classification


def _folder(root: Path) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        for i in range(6):
            size = 8 if i == 0 else 32  # one 8 px thumbnail per class: 8× to 64 px, the others 2×
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((size, size), 30 * i, dtype=np.uint8)).save(root / cls / f"{i}.png")


def _ids(splits: dict) -> set[str]:
    return {str(s.items[i].id) for s in splits.values() for i in range(len(s))}


def test_upsampled_images_are_kept_with_one_warning_naming_them(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    _folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        splits = read_classification(tmp_path, ReaderOptions(dims=2, input_size=(64, 64)))
    assert len(_ids(splits)) == 12, "no labelled image is dropped"
    warned = [r.getMessage() for r in caplog.records if "upsampled" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "2 of 12" in warned[0] and "8.0×" in warned[0] and "task.max_upsample=4" in warned[0]
    assert str(tmp_path / "a" / "0.png") in warned[0] and str(tmp_path / "b" / "0.png") in warned[0]
    assert str(tmp_path / "a" / "1.png") not in warned[0]
    assert all(not s.skipped for s in splits.values())


def test_with_task_max_upsample_they_are_skipped_with_a_reason(tmp_path: Path) -> None:
    _folder(tmp_path)
    opts = ReaderOptions(dims=2, input_size=(64, 64), max_upsample=4.0)
    splits = read_classification(tmp_path, opts)
    assert len(_ids(splits)) == 10 and not any(i.endswith("0.png") for i in _ids(splits))
    skipped = dict(splits["train"].skipped)
    assert set(skipped) == {str(tmp_path / "a" / "0.png"), str(tmp_path / "b" / "0.png")}
    assert all("8.0×" in r and "task.max_upsample=4" in r for r in skipped.values())
    assert len(_ids(read_classification(tmp_path, ReaderOptions(dims=2, input_size=(64, 64), max_upsample=8.0)))) == 12


def test_the_task_option_is_checked_and_reaches_the_reader() -> None:
    from medkit_plugin_classification.task import ClassificationTask

    assert ClassificationTask(dims=2, modality="xray", max_upsample=4).options.max_upsample == 4.0
    assert ClassificationTask(dims=2, modality="xray").options.max_upsample is None
    with pytest.raises(ConfigError, match="task classification: max_upsample"):
        ClassificationTask(dims=2, modality="xray", max_upsample=0.5)


def test_an_unreadable_header_is_left_to_the_loader(tmp_path: Path) -> None:
    """The screen reads headers; a file it cannot read is kept, for loading to report under on_error."""
    _folder(tmp_path)
    (tmp_path / "a" / "garbage.png").write_bytes(b"not an image")
    splits = read_classification(tmp_path, ReaderOptions(dims=2, input_size=(64, 64)))
    assert len(_ids(splits)) == 13
