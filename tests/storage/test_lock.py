"""One writer per run directory: a second process is refused in one line naming the holder, the
locked run is left untouched, and the lock of a SIGKILLed holder is taken over."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medkit.api.errors import CheckpointError
from medkit.storage.lock import LOCK_FILE, RunLockedError, holds_lock, read_lock, run_lock

HOLDER = """
import sys, time
from medkit.storage.lock import run_lock, RunLockedError
try:
    with run_lock(sys.argv[1], "test-holder"):
        print("GOT", flush=True)
        time.sleep(float(sys.argv[2]))
except RunLockedError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
"""


def _holder(run: Path, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(run), str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_got(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "GOT", proc.stderr.read() if proc.stderr else ""


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_processes_started_together_exactly_one_holds(tmp_path: Path) -> None:
    run = tmp_path / "run"
    procs = [_holder(run, 3.0), _holder(run, 3.0)]
    results = [(p, *p.communicate(timeout=60)) for p in procs]
    won = [(p, out) for p, out, _ in results if p.returncode == 0]
    lost = [(p, err) for p, _, err in results if p.returncode != 0]
    assert len(won) == 1 and len(lost) == 1, results
    winner, loser_err = won[0][0], lost[0][1]
    assert lost[0][0].returncode == 3
    lines = [ln for ln in loser_err.splitlines() if ln.strip()]
    assert len(lines) == 1, loser_err
    assert f"PID {winner.pid} on host {socket.gethostname()}" in lines[0] and str(run) in lines[0]
    assert "medkit test-holder" in lines[0]


def test_a_refused_process_touches_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    holder = _holder(run, 30.0)
    try:
        _wait_for_got(holder)
        before = _snapshot(run)
        with pytest.raises(RunLockedError) as err:
            with run_lock(run, "second"):
                pytest.fail("the lock was granted twice")
        assert f"PID {holder.pid}" in str(err.value) and "\n" not in str(err.value)
        assert _snapshot(run) == before, "the refused process changed the run directory"
        assert not holds_lock(run)
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    holder = _holder(run, 60.0)
    _wait_for_got(holder)
    assert read_lock(run)["pid"] == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert read_lock(run)["pid"] == holder.pid, "a killed holder leaves its (informative) body behind"
    caplog.set_level(logging.INFO, logger="medkit.storage.lock")
    t0 = time.perf_counter()
    with run_lock(run, "takeover"):
        assert read_lock(run)["pid"] == os.getpid() and read_lock(run)["command"] == "takeover"
        assert holds_lock(run)
        # still exclusive against other processes after the takeover
        other = _holder(run, 0.0)
        _, err = other.communicate(timeout=60)
        assert other.returncode == 3 and f"PID {os.getpid()}" in err
    assert time.perf_counter() - t0 < 30
    assert f"taking over the lock left by PID {holder.pid}" in caplog.text
    assert (run / LOCK_FILE).read_text() == "", "a clean release clears the body (the file stays)"
    again = _holder(run, 0.0)
    assert again.wait(timeout=60) == 0


def test_nested_lock_in_one_process_is_reentrant(tmp_path: Path) -> None:
    with run_lock(tmp_path / "r", "outer"):
        with run_lock(tmp_path / "r", "inner"):
            assert json.loads((tmp_path / "r" / LOCK_FILE).read_text())["command"] == "outer"
        assert holds_lock(tmp_path / "r")
    assert not holds_lock(tmp_path / "r")


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (run / LOCK_FILE).symlink_to(victim)
    with pytest.raises(CheckpointError, match="cannot lock"):
        with run_lock(run, "x"):
            pass
    assert victim.read_text() == "keep me"
