"""A real rehearsal run shown as log lines: the evaluation, the buffer's feature pass and its k-means
say how far they are, at what rate and how long is left; stage lines show each loss kind's mean over
the logging window, which the step log confirms."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from medkit.api import progress
from medkit.api.progress import LogReporter

STEPS, EVERY = 6, 3


def _run(run_dir: Path, demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.config.compose import Selection, compose
    from medkit.engine.engine import Engine
    from medkit.testing.synthetic import use_synthetic_host

    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(demo))
    monkeypatch.setattr(progress, "WORK_INTERVAL_S", 0.0)  # a line at every unit of long work
    host = use_synthetic_host()
    overrides = ["encoder.depth=1", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
                 "trainer.eval_batches=2", "trainer.checkpoint_every=1000", f"trainer.log_every={EVERY}",
                 "trainer.probe_linear_steps=0"]
    cfg = compose(Selection(modalities=["synth_a", "synth_b"], strategy="rehearsal", preset="tiny",
                            max_steps=STEPS, seed=0, overrides=overrides), host=host)
    Engine(cfg, run_dir, components=host, reporter=LogReporter(every=EVERY)).run()


@pytest.mark.slow
def test_long_work_and_stage_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="medkit.progress")
    _run(tmp_path / "run", tmp_path / "demo", monkeypatch)
    lines = [r.getMessage() for r in caplog.records if r.name == "medkit.progress"]

    # evaluation: a count of parts, a rate and the time left before the end, "done in" at the end
    evaluation = [ln for ln in lines if ln.startswith("evaluation after stage 2")]
    assert evaluation, lines
    assert re.search(r": parts 1/\d+ \([\d.e+-]+ parts/s, \S+ left\)$", evaluation[1]), evaluation
    assert "done in" in evaluation[-1]
    # the rehearsal buffer's feature pass and k-means
    assert any(re.match(r"buffer features \[synth_a\]: samples \d+/\d+ .*(left|done in)", ln) for ln in lines), lines
    assert any(ln.startswith("k-means [synth_a]") for ln in lines), lines

    # stage lines: each kind's mean over the window the line closes, from the run's own step log
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert any(r["role"] == "buffer" for r in rows), "no buffer step in stage 2: the test proves nothing"
    stage_lines = [ln for ln in lines if re.match(r"stage \d/2 \[\w+\]: step \d+/", ln)]
    assert len(stage_lines) == 2 * STEPS // EVERY
    for ln in stage_lines:
        stage, step = int(ln[6]), int(re.search(r"step (\d+)/", ln).group(1))
        window = [r for r in rows if r["stage"] == stage and step - EVERY < r["step"] <= step]
        for kind in ("mae", "distill"):
            values = [r[kind] for r in window if kind in r]
            if values:
                assert f"{kind}={sum(values) / len(values):.4g} " in ln, (ln, window)
            else:
                assert f"{kind}=" not in ln, ln
        assert f"lr={window[-1]['lr']:.4g} " in ln and "loss=" not in ln, ln
