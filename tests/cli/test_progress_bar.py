"""The terminal bar shows each loss kind's mean over the last ``log_every`` steps, like the log lines."""

from __future__ import annotations

from medkit.api.progress import work_reporter
from medkit.cli.common import RichReporter


def test_the_bar_shows_window_means_not_the_last_step() -> None:
    bar = RichReporter(window=2)
    bar.start(4, "stage 2/2 [xray]")
    shown = []
    steps = [{"loss": 1.0, "lr": 0.1, "mae": 1.0}, {"loss": 0.002, "lr": 0.1, "distill": 0.002},
             {"loss": 0.2, "lr": 0.05, "mae": 0.2}, {"loss": 0.4, "lr": 0.01, "mae": 0.4}]
    try:
        for n, m in enumerate(steps, 1):
            bar.update(n, m)
            shown.append(bar._shown)
    finally:
        bar.finish()
    assert shown == ["mae=1 lr=0.1", "mae=1 distill=0.002 lr=0.1", "mae=1 distill=0.002 lr=0.1",
                     "mae=0.3 lr=0.01"]
    assert work_reporter(bar, "parts") is bar  # long work (evaluation, k-means…) uses the same bar
