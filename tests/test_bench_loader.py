"""bench/gpu.sh (with its loader step) is valid bash, and the loader benches parse their options."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_sh_is_valid_bash_and_runs_the_loader() -> None:
    out = subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = (ROOT / "bench" / "gpu.sh").read_text()
    assert "bench/loader_gpu.py" in text and "LOADER_WORKERS" in text


@pytest.mark.parametrize("script", ["loader.py", "loader_gpu.py"])
def test_loader_benches_parse_their_options(script: str) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "--workers" in out.stdout if script == "loader_gpu.py" else "--appetite" in out.stdout
