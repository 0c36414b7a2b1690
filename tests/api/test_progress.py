"""Progress lines: each loss kind's mean over the logging window (not the last step's value), the
rate and the time left; long work gets a line every few seconds, or the run's bar."""

from __future__ import annotations

import logging

import pytest

from medkit.api import progress
from medkit.api.progress import LogReporter, NullReporter, WindowMeans, format_seconds, track, work_reporter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(progress.time, "monotonic", c)
    return c


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "medkit.progress"]


def test_the_stage_line_shows_each_loss_kinds_window_mean(caplog: pytest.LogCaptureFixture, clock: Clock) -> None:
    """Stage 2 of a rehearsal run: MAE steps of the new modality and a buffer step's distillation
    loss. The line shows ``mae`` = the mean of the window's MAE steps and ``distill`` = the mean of
    its distillation steps; the last step (a tiny distillation loss) does not stand for the window."""
    caplog.set_level(logging.INFO, logger="medkit.progress")
    rep = LogReporter(every=4)
    rep.start(8, "stage 2/2 [xray]")
    steps = [{"loss": 0.9, "lr": 1e-3, "mae": 0.9}, {"loss": 0.7, "lr": 9e-4, "mae": 0.7},
             {"loss": 0.002, "lr": 8e-4, "distill": 0.002}, {"loss": 0.004, "lr": 7e-4, "distill": 0.004}]
    for n, m in enumerate(steps, 1):
        clock.now = n * 0.5
        rep.update(n, m)
    line = _lines(caplog)[-1]
    assert "mae=0.8 " in line and "distill=0.003 " in line, line
    assert "loss=" not in line  # the total mixes kinds: shown only when the steps carry no term of their own
    assert "lr=0.0007" in line  # the learning rate is the latest, not a mean
    assert "step 4/8" in line and "(2 steps/s, 2s left)" in line, line
    # the next window starts afresh
    clock.now = 4.0
    for n in range(5, 9):
        rep.update(n, {"loss": 0.5, "lr": 1e-4, "mae": 0.5})
    last = _lines(caplog)[-1]
    assert "mae=0.5 " in last and "distill" not in last and "done in 4s" in last, last


def test_window_means_show_the_total_loss_only_without_terms() -> None:
    w = WindowMeans()
    w.add({"loss": 1.0, "lr": 0.1})
    w.add({"loss": 3.0, "lr": 0.2})
    assert w.take() == {"loss": 2.0, "lr": 0.2}
    assert w.take() == {}


def test_time_left_from_the_rate_since_start_of_this_session(caplog: pytest.LogCaptureFixture, clock: Clock) -> None:
    """A resumed stage: the rate counts the steps done since the restart, not those before it."""
    caplog.set_level(logging.INFO, logger="medkit.progress")
    rep = LogReporter(every=10)
    rep.start(100, "stage 1/1 [ct]", completed=50)
    clock.now = 20.0
    rep.update(60, {"loss": 1.0})
    assert "(0.5 steps/s, 1m20s left)" in _lines(caplog)[-1]


def test_long_work_lines_come_by_time(caplog: pytest.LogCaptureFixture, clock: Clock) -> None:
    caplog.set_level(logging.INFO, logger="medkit.progress")
    rep = work_reporter(None, "samples", interval_s=10)
    rep.start(1000, "buffer features [xray]")
    for n, t in ((100, 5.0), (200, 10.0), (300, 15.0), (400, 20.5)):
        clock.now = t
        rep.update(n, {})
    lines = _lines(caplog)[1:]
    assert lines == ["buffer features [xray]: samples 200/1000 (20 samples/s, 40s left)",
                     "buffer features [xray]: samples 400/1000 (19.5 samples/s, 31s left)"]


def test_work_reporter_keeps_the_runs_display() -> None:
    class Bar:
        def start(self, total: int, description: str, completed: int = 0) -> None: ...

        def update(self, completed: int, metrics: dict[str, float]) -> None: ...

        def finish(self) -> None: ...

    bar, null = Bar(), NullReporter()
    assert work_reporter(bar, "batches") is bar
    assert work_reporter(null, "batches") is null
    made = work_reporter(LogReporter(every=10), "batches")
    assert isinstance(made, LogReporter) and made.unit == "batches" and made.every is None


def test_track_finishes_the_reporter_however_the_loop_ends() -> None:
    seen: list[tuple[str, object]] = []

    class Spy:
        def start(self, total: int, description: str, completed: int = 0) -> None:
            seen.append(("start", total))

        def update(self, completed: int, metrics: dict[str, float]) -> None:
            seen.append(("update", completed))

        def finish(self) -> None:
            seen.append(("finish", None))

    assert list(track("abc", Spy(), 3, "letters")) == ["a", "b", "c"]
    assert seen == [("start", 3), ("update", 1), ("update", 2), ("update", 3), ("finish", None)]
    seen.clear()
    with pytest.raises(ValueError):
        for _ in track("abc", Spy(), 3, "letters"):
            raise ValueError
    assert seen[-1] == ("finish", None)


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (42, "42s"), (185, "3m05s"), (7620, "2h07m"),
                                           (float("inf"), "?")])
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
