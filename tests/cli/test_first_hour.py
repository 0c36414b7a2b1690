"""First-hour rough edges: warnings once, rank 1 quiet, one line for texts in ``data inspect``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ..conftest import run_cli

#: how each log line starts (medkit.cli.common.LOG_TIME_FORMAT, with milliseconds)
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} "
LOGGING = """
import logging, sys
from medkit.cli.common import setup_logging
setup_logging(logging.INFO)
from pydicom.misc import warn_and_log
warn_and_log("the value length (80) exceeds the maximum length of 64 allowed for VR LO")
logging.getLogger("medkit.engine").info("an info line of the run")
logging.getLogger("medkit.engine").warning("a warning line of the run")
"""


def _run(env_extra: dict[str, str]) -> str:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", LOGGING], capture_output=True, text=True, env=env, check=True)
    return out.stderr


def test_pydicom_warning_is_printed_once_as_one_line():
    err = _run({})
    lines = [line for line in err.splitlines() if "exceeds the maximum length" in line]
    assert len(lines) == 1, err
    assert re.match(STAMP + "warning: ", lines[0]), lines[0]
    assert re.search(STAMP + "an info line of the run$", err, re.M), err


def test_non_zero_ranks_log_warnings_only():
    err = _run({"RANK": "1"})
    assert "an info line of the run" not in err
    assert "a warning line of the run" in err
    assert "an info line of the run" in _run({"RANK": "0"})


@pytest.mark.slow
def test_data_inspect_summarises_texts_in_one_line():
    out = run_cli("data", "inspect", "--modality", "report")
    assert out.returncode == 0, out.stderr
    text_lines = [line for line in out.stdout.splitlines() if "words" in line]
    assert len(text_lines) == 1, out.stdout
    assert "min" in text_lines[0] and "median" in text_lines[0] and "max" in text_lines[0]


@pytest.mark.slow
def test_two_ranks_print_each_log_line_once(tmp_path):
    out = run_cli("run", "--modality", "ct", "--nproc-per-node", "2", "--preset", "tiny", "--max-steps", "2",
                  "--run-dir", str(tmp_path / "ddp"), "encoder.depth=1", "encoder.embed_dim=48",
                  "encoder.num_heads=3", "trainer.batch_size=4", "trainer.eval_batches=1",
                  env={"MEDKIT_DEMO_DIR": str(tmp_path / "demo")})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [re.sub("^" + STAMP, "", line) for line in out.stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("warning:")]  # without their times
    assert lines and len(lines) == len(set(lines)), out.stderr
