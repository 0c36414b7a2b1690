"""Sliding-window evaluation reports the whole evaluation too: images done of N and the time left
overall, estimated from the windows of the images started so far (known answers on a fake clock)."""

from __future__ import annotations

import logging

import pytest

from medkit_plugin_segmentation import progress as progress_module
from medkit_plugin_segmentation.progress import WindowProgress


def test_lines_show_images_done_and_time_left_overall(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    p = WindowProgress(every_s=0.0, images=3)
    with caplog.at_level(logging.INFO, logger="medkit_plugin_segmentation.progress"):
        p.start_image("a", 4)
        for _ in range(4):  # one window a second
            clock[0] += 1.0
            p.advance(1)
        p.start_image("b", 8)
        clock[0] += 2.0
        p.advance(2)
    lines = [r.getMessage() for r in caplog.records]
    # 1 s in: 3 windows of a, then b and c at a's 4 windows each: 11 windows at 1 window/s
    assert lines[0].endswith("window 1/4; 1.00 windows/s; ~3 s left for this image; 0/3 images done, "
                             "~11 s left overall"), lines[0]
    assert "image 1/3 (a), window 4/4" in lines[3] and "1/3 images done, ~8 s left overall" in lines[3]
    # 6 s in, 6 windows: b has 6 left, c is counted at the mean of a and b, (4 + 8) / 2 = 6
    assert lines[4].endswith("window 2/8; 1.00 windows/s; ~6 s left for this image; 1/3 images done, "
                             "~12 s left overall"), lines[4]


def test_without_an_image_count_the_line_is_per_image_only(caplog: pytest.LogCaptureFixture) -> None:
    p = WindowProgress(every_s=0.0)
    with caplog.at_level(logging.INFO, logger="medkit_plugin_segmentation.progress"):
        p.start_image("a", 2)
        p.advance(1)
    assert caplog.records and "left overall" not in caplog.records[0].getMessage()
    assert p.left_overall(1.0) != p.left_overall(1.0)  # nan: no image count to extrapolate
