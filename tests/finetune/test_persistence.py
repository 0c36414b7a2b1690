"""A fine-tune can always be resumed or restarted: a torn step log, a kill before the first
checkpoint or between a validation and its checkpoint, a finished run; one writer per run directory;
a full disk is one line naming the file."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3"]
QUICK = ["trainer.batch_size=4", "trainer.val_every=2", "trainer.checkpoint_every=2"]
ARGS = ["--task", "classification", "--modality", "xray", "--scratch", "--preset", "tiny", "--max-steps", "4"]


def _finetune(medkit, run: Path, *extra: str):
    return medkit("finetune", *ARGS, "--run-dir", str(run), *TINY, *QUICK, *extra)


def _same_weights(a: Path, b: Path) -> bool:
    from medkit.storage.files import load_tensors

    x, y = load_tensors(a), load_tensors(b)
    return set(x) == set(y) and all(bool((x[k] == y[k]).all()) for k in x)


def _steps(run: Path) -> list[int]:
    from medkit.storage.jsonl import read_jsonl

    return [r["step"] for r in read_jsonl(run / "metrics" / "steps.jsonl")]  # no torn or glued line


@pytest.fixture
def crash_at(monkeypatch: pytest.MonkeyPatch):
    """``crash_at(n)``: the n-th training loss raises (as a kill would stop the run there)."""
    from medkit_plugin_classification.task import ClassificationTask

    original = ClassificationTask.loss

    def arm(n: int | None) -> None:
        calls = {"n": 0}

        def loss(self, model, batch):
            calls["n"] += 1
            if n is not None and calls["n"] == n:
                raise RuntimeError("simulated crash")
            return original(self, model, batch)

        monkeypatch.setattr(ClassificationTask, "loss", loss if n is not None else original)

    return arm


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the same config (made once; tests only read it)."""
    from click.testing import CliRunner

    from medkit.cli.main import cli

    run = tmp_path_factory.mktemp("ref") / "a"
    res = CliRunner().invoke(cli, ["finetune", *ARGS, "--run-dir", str(run), *TINY, *QUICK],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return run


def test_a_torn_step_log_resumes(medkit, reference: Path, tmp_path: Path, crash_at, caplog) -> None:
    run = tmp_path / "b"
    crash_at(3)
    assert _finetune(medkit, run).exit_code == 1
    crash_at(None)
    log = run / "metrics" / "steps.jsonl"
    size = log.stat().st_size
    with open(log, "ab") as fh:
        fh.write(b'{"step": 3, "loss": 0.7')  # killed in the middle of an append
    res = medkit("finetune", "--resume", str(run))
    assert res.exit_code == 0, res.output
    assert "JSONDecodeError" not in res.output
    assert f"{log}: dropped a torn last line at byte {size}" in caplog.text
    assert _steps(run) == [1, 2, 3, 4]
    assert _same_weights(run / "model.safetensors", reference / "model.safetensors")


def test_killed_before_the_first_checkpoint_restarts_in_place(medkit, reference: Path, tmp_path: Path,
                                                              crash_at, caplog) -> None:
    for how in ("again", "resume"):
        run = tmp_path / how
        crash_at(1)
        assert _finetune(medkit, run).exit_code == 1
        assert (run / "manifest.json").exists() and not (run / "checkpoint").exists()
        crash_at(None)
        caplog.clear()
        res = _finetune(medkit, run) if how == "again" else medkit("finetune", "--resume", str(run))
        assert res.exit_code == 0, res.output
        assert "stopped before its first checkpoint; starting it over in place from step 0" in caplog.text
        assert _steps(run) == [1, 2, 3, 4]
        assert _same_weights(run / "model.safetensors", reference / "model.safetensors")
        assert _same_weights(run / "best.safetensors", reference / "best.safetensors")


def test_a_kill_between_validation_and_checkpoint_keeps_best_in_step(medkit, reference: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.storage import files

    run, real, calls = tmp_path / "b", files.swap_directory, {"n": 0}

    def swap(new, final):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of step 4, after its validation wrote the pending best
            raise RuntimeError("simulated kill before the swap")
        real(new, final)

    monkeypatch.setattr(files, "swap_directory", swap)
    assert _finetune(medkit, run).exit_code == 1
    monkeypatch.setattr(files, "swap_directory", real)
    trainer = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert trainer["step"] == 2
    assert _same_weights(run / "best.safetensors", run / "checkpoint" / "best.safetensors")
    res = medkit("finetune", "--resume", str(run))
    assert res.exit_code == 0, res.output
    assert _same_weights(run / "best.safetensors", reference / "best.safetensors")
    assert json.loads((run / "metrics.json").read_text())["history"] == \
        json.loads((reference / "metrics.json").read_text())["history"]
    assert _steps(run) == [1, 2, 3, 4]
    assert not (run / ".best-pending.safetensors").exists()


def test_finished_and_checkpointed_runs_say_what_to_do(medkit, reference: Path, tmp_path: Path, crash_at) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in reference.iterdir() if p.is_file() and p.name != ".medkit.lock"}
    res = medkit("finetune", "--resume", str(reference))
    assert res.exit_code == 0, res.output
    assert f"{reference} already finished at step 4; nothing to resume" in res.output
    after = {p.name: p.stat().st_mtime_ns for p in reference.iterdir() if p.is_file() and p.name != ".medkit.lock"}
    assert after == before, "resuming a finished run rewrites nothing"
    res = _finetune(medkit, reference)
    assert res.exit_code == 1 and "already holds a finished fine-tune; choose another --run-dir" in res.output
    run = tmp_path / "mid"
    crash_at(3)
    assert _finetune(medkit, run).exit_code == 1
    crash_at(None)
    res = _finetune(medkit, run)
    assert res.exit_code == 1
    assert f"already holds a fine-tune at step 2 of 4; use --resume {run}" in res.output


def test_a_full_disk_is_one_line_naming_the_file(medkit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.storage import files

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "replace", full)
    run = tmp_path / "full"
    res = _finetune(medkit, run)
    monkeypatch.undo()
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip() and not ln.startswith(("warning", "info"))]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.output
    assert f"cannot write {run / 'config.yaml'}: No space left on device (ENOSPC); no config.yaml was written" \
        in errors[0]


@pytest.mark.slow
def test_two_finetunes_started_together_one_runs(tmp_path: Path) -> None:
    run = tmp_path / "shared"
    cmd = [sys.executable, "-m", "medkit.cli.main", "finetune", *ARGS[:-1], "24", "--run-dir", str(run), *TINY,
           "trainer.batch_size=4", "trainer.val_every=12", "trainer.checkpoint_every=12"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    done = [(p, *p.communicate(timeout=600)) for p in procs]
    ok = [p for p, _, _ in done if p.returncode == 0]
    refused = [err for p, _, err in done if p.returncode != 0]
    assert len(ok) == 1 and len(refused) == 1, [(p.returncode, err[-2000:]) for p, _, err in done]
    errors = [ln for ln in refused[0].splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused[0], refused[0]
    assert f"{run} is in use by PID {ok[0].pid} on host {socket.gethostname()} (medkit finetune" in errors[0]
    assert _steps(run) == list(range(1, 25)), "no step is logged twice"
    assert json.loads((run / "manifest.json").read_text())["finished"] is True


def test_a_foreign_run_directory_is_never_cleared(medkit, pretrained_run: Path, tmp_path: Path) -> None:
    def snapshot(root: Path) -> dict[str, int]:
        return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
                if p.is_file() and p.name != ".medkit.lock"}

    before = snapshot(pretrained_run)
    res = _finetune(medkit, pretrained_run)
    assert res.exit_code == 1 and "is not a `medkit finetune` run; choose another --run-dir" in res.output
    assert snapshot(pretrained_run) == before
    half = tmp_path / "half"  # a pre-training run killed before its first checkpoint
    half.mkdir()
    (half / "manifest.json").write_text(json.dumps({"format": 1, "finished": False}))
    (half / "model.safetensors").write_bytes(b"keep")
    res = _finetune(medkit, half)
    assert res.exit_code == 1 and (half / "model.safetensors").read_bytes() == b"keep"
