"""Kill a short two-stage run at every file-system commit point, resume it, and compare it bit for bit
with the uninterrupted run (docs/checkpoints.md). Each trial forks a child from a process that has
already imported torch and medkit, so a trial costs a fraction of a second, not a fresh interpreter.

The default run kills at a seeded sample of the points (half of them ``rename``/``symlink``, the
commits themselves); ``python -m pytest -m exhaustive tests/engine/test_crash_points.py`` (or ``-m slow``)
sweeps every point.
"""

from __future__ import annotations

import json
import os
import random
import signal
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.testing.faults import CommitPoints

STEPS, EVERY = 4, 2
OVERRIDES = (f"trainer.checkpoint_every={EVERY}",)


def _run(run_dir: Path, *, resume: bool, kill_at: int | None, log_file: Path | None, demo: Path) -> int:
    """Run (or resume) in a forked child; return its wait status."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            from medkit.testing.synthetic import use_synthetic_host

            torch.set_num_threads(1)
            use_synthetic_host()
            points = CommitPoints(run_dir, kill_at=kill_at, log_file=log_file).install()
            if resume:
                from medkit.api.progress import NullReporter
                from medkit.engine.engine import Engine, load_config
                from medkit.registry import get_host

                Engine(load_config(run_dir), run_dir, components=get_host(), reporter=NullReporter(),
                       resume=True).run()
            else:
                from medkit.testing.synthetic import run_synthetic

                run_synthetic(run_dir, "sequential", max_steps=STEPS, overrides=OVERRIDES, demo_dir=demo)
            points.uninstall()
            code = 0
        except BaseException:  # noqa: BLE001 - report and exit the child, never return into pytest
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _state(run: Path) -> dict[str, Any]:
    from medkit.storage.files import load_tensors
    from medkit.storage.jsonl import read_jsonl

    steps = read_jsonl(run / "metrics" / "steps.jsonl")  # medkit's own reader: no torn or glued line
    for s in steps:  # wall times differ between any two runs
        s.pop("time_s", None)
        s.pop("data_s", None)
    return {"weights": load_tensors(run / "model.safetensors"),
            "matrix": (run / "metrics" / "matrix.csv").read_text(), "steps": steps,
            "finished": json.loads((run / "manifest.json").read_text())["finished"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("crash-ref")
    log_file = root / "ops.jsonl"
    status = _run(root / "run", resume=False, kill_at=None, log_file=log_file, demo=root / "demo")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    ops = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert len(ops) > 20, "the run made the commit points the test expects"
    return {"state": _state(root / "run"), "ops": ops, "demo": root / "demo"}


def _trial(reference: dict[str, Any], n: int, tmp: Path) -> None:
    run = tmp / f"kill-{n}"
    status = _run(run, resume=False, kill_at=n, log_file=None, demo=reference["demo"])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"point {n} was not reached"
    op = reference["ops"][n - 1]
    if not (run / "current").is_symlink():  # killed before the first commit: nothing to resume
        assert not (run / "manifest.json").exists()
        status = _run(run, resume=True, kill_at=None, log_file=None, demo=reference["demo"])
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1, "resume refuses, the run can be restarted"
        return
    status = _run(run, resume=True, kill_at=None, log_file=None, demo=reference["demo"])
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"resume after a kill at {op} failed"
    got, want = _state(run), reference["state"]
    assert got["finished"] is True
    assert got["steps"] == want["steps"], f"step log differs after a kill at {op}"
    assert got["matrix"] == want["matrix"], f"matrix.csv differs after a kill at {op}"
    assert got["weights"].keys() == want["weights"].keys()
    bad = [k for k in want["weights"] if not torch.equal(got["weights"][k], want["weights"][k])]
    assert not bad, f"weights differ after a kill at {op}: {bad[:3]}"


def _sample(ops: list[dict[str, Any]], k: int = 6) -> list[int]:
    commits = [o["n"] for o in ops if o["op"] in ("rename", "replace", "symlink")]
    rng = random.Random(0)
    return sorted(set(rng.sample(commits, min(k, len(commits)))
                      + rng.sample([o["n"] for o in ops], min(k, len(ops)))))


@pytest.mark.slow
def test_kill_at_sampled_commit_points_then_resume_is_bit_identical(reference, tmp_path) -> None:
    for n in _sample(reference["ops"]):
        _trial(reference, n, tmp_path)


@pytest.mark.slow
@pytest.mark.exhaustive
def test_kill_at_every_commit_point_then_resume_is_bit_identical(reference, tmp_path) -> None:
    for o in reference["ops"]:
        _trial(reference, o["n"], tmp_path)
