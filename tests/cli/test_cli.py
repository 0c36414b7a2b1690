"""The command line as users run it (subprocesses)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from medkit.storage.files import load_tensors
from medkit.storage.jsonl import read_jsonl

from ..conftest import make_dist, run_cli

CRASHER = """
import os, signal
from medkit.api import hookimpl
MEDKIT_API_VERSION = 1
@hookimpl
def medkit_on_step_end(run, stage, step, metrics):
    if os.environ.get("CRASH_AT") == f"{stage.index}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
"""
SYNTH = "from medkit.testing.synthetic import *  # noqa\nfrom medkit.testing.synthetic import medkit_register_modalities, MEDKIT_API_VERSION\n"
#: how each log line starts (medkit.cli.common.LOG_TIME_FORMAT, with milliseconds)
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} "
SMALL = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
         "trainer.eval_batches=1"]


@pytest.fixture()
def synth_env(tmp_path):
    root = tmp_path / "site"
    make_dist(root, "medkit-synthetic", "medkit_synth", SYNTH)
    make_dist(root / "crash", "medkit-crasher", "medkit_crash", CRASHER)
    sep = ":"
    inherited = os.environ.get("PYTHONPATH", "")  # keep a worktree's src first, as in this process
    return {"PYTHONPATH": f"{inherited}{sep}{root}{sep}{root / 'crash'}".lstrip(sep),
            "MEDKIT_DEMO_DIR": str(tmp_path / "demo")}


def test_help_does_not_import_heavy_modules():
    """What keeps ``medkit --help`` fast (its time is measured by bench/cli_startup.py, not here)."""
    code = ("import sys; from medkit.cli.main import cli\n"
            "try:\n    cli(['--help'], standalone_mode=False)\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'monai', 'numpy', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]"), out.stdout


def test_plugins_list_json_does_not_import_torch():
    code = ("import sys; from medkit.cli.main import cli\n"
            "try:\n    cli(['plugins', 'list', '--json'], standalone_mode=False)\nexcept SystemExit: pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "NOTORCH" in out.stderr
    data = json.loads(out.stdout)
    builtin = next(p for p in data["plugins"] if p["name"] == "builtin")
    assert builtin["provides"]["strategy"] == ["sequential", "joint", "tfs"]
    assert all({"distribution", "version", "provides", "error"} <= set(p) for p in data["plugins"])


@pytest.mark.slow
def test_unknown_modality_is_one_line_naming_known(synth_env):
    out = run_cli("run", "--modality", "nope", "--strategy", "sequential", env=synth_env)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "unknown modality 'nope'" in lines[0] and "synth_a" in lines[0]


@pytest.mark.slow
def test_bad_override_is_one_line(synth_env):
    out = run_cli("config", "show", "--modality", "synth_a", "optim.lrr=3", env=synth_env)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1
    assert "did you mean optim.lr" in out.stderr


@pytest.mark.slow
def test_config_show_composes_overrides(synth_env):
    out = run_cli("config", "show", "--modality", "synth_a", "--preset", "tiny", "optim.lr=0.5", env=synth_env)
    assert out.returncode == 0, out.stderr
    assert "lr: 0.5" in out.stdout and "synth_a" in out.stdout and "mask_ratio: 0.75" in out.stdout


def _run_args(run_dir, steps=8):
    return ["run", "--modality", "synth_a,synth_b", "--strategy", "sequential", "--preset", "tiny",
            "--max-steps", str(steps), "--run-dir", str(run_dir), *SMALL, "trainer.checkpoint_every=3"]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, synth_env):
    full = run_cli(*_run_args(tmp_path / "full"), env=synth_env)
    assert full.returncode == 0, full.stderr
    assert f"run directory: {tmp_path / 'full'}" in full.stdout
    logged = [ln for ln in full.stderr.splitlines() if "stage 1/2 done" in ln or "stage 2 plan" in ln]
    assert len(logged) == 2 and all(re.match(STAMP, ln) for ln in logged), full.stderr[-2000:]
    crashed = run_cli(*_run_args(tmp_path / "crash"), env={**synth_env, "CRASH_AT": "1:5"})
    assert crashed.returncode == -9
    manifest = json.loads((tmp_path / "crash" / "manifest.json").read_text())
    assert manifest["finished"] is False and manifest["current"] == {"stage": 2, "step": 3}
    resumed = run_cli("run", "--resume", str(tmp_path / "crash"), env=synth_env)
    assert resumed.returncode == 0, resumed.stderr
    a = load_tensors(tmp_path / "full" / "model.safetensors")
    b = load_tensors(tmp_path / "crash" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = read_jsonl(tmp_path / "crash" / "metrics" / "steps.jsonl")  # no torn or glued line
    assert len(steps) == 16, "no step is lost or logged twice"
    assert len({(s["stage"], s["step"]) for s in steps}) == 16
    assert (tmp_path / "full" / "metrics" / "matrix.csv").read_text() == \
        (tmp_path / "crash" / "metrics" / "matrix.csv").read_text()


@pytest.mark.slow
def test_broken_plugins_are_reported_and_isolated(tmp_path, synth_env):
    site = tmp_path / "broken"
    make_dist(site / "a", "medkit-plugin-boom", "boomplug", "raise ImportError('missing dependency xyz')")
    make_dist(site / "b", "medkit-plugin-typo", "typoplug", """
        from medkit.api import hookimpl
        MEDKIT_API_VERSION = 1
        @hookimpl
        def medkit_register_strategys(register):
            pass
        """)
    make_dist(site / "c", "medkit-plugin-future", "futureplug", """
        from medkit.api import hookimpl, StrategySpec
        MEDKIT_API_VERSION = 7
        @hookimpl
        def medkit_register_strategies(register):
            register(StrategySpec("future", "x:y"))
        """)
    make_dist(site / "d", "medkit-plugin-dup", "dupplug", """
        from medkit.api import hookimpl, StrategySpec
        MEDKIT_API_VERSION = 1
        @hookimpl
        def medkit_register_strategies(register):
            register(StrategySpec("sequential", "medkit.strategies.reference:make_joint"))
        """)
    extra = ":".join(str(site / x) for x in "abcd")
    env = {**synth_env, "PYTHONPATH": f"{synth_env['PYTHONPATH']}:{extra}"}
    listed = run_cli("plugins", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    records = {p["distribution"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert "missing dependency xyz" in records["medkit-plugin-boom"]["error"]
    assert "medkit_register_strategys" in records["medkit-plugin-typo"]["error"]
    assert "API 7" in records["medkit-plugin-future"]["error"]
    assert "also provided by medkit" in records["medkit-plugin-dup"]["error"]
    check = run_cli("plugins", "check", env=env)
    assert check.returncode != 0
    for dist in ("boom", "typo", "future", "dup"):
        assert f"medkit-plugin-{dist}" in check.stderr
    # the good plugins still run; the clashing name is an error naming both distributions
    ok = run_cli("run", "--modality", "synth_a", "--strategy", "joint", "--preset", "tiny", "--max-steps", "2",
                 "--run-dir", str(tmp_path / "ok"), *SMALL, env=env)
    assert ok.returncode == 0, ok.stderr
    clash = run_cli("run", "--modality", "synth_a", "--strategy", "sequential", "--run-dir",
                    str(tmp_path / "x"), env=env)
    assert clash.returncode != 0 and "medkit-plugin-dup" in clash.stderr and "medkit" in clash.stderr
    future = run_cli("run", "--modality", "synth_a", "--strategy", "future", env=env)
    assert future.returncode != 0 and "medkit-plugin-future" in future.stderr


@pytest.mark.slow
def test_nproc_per_node_two_on_cpu(tmp_path, synth_env):
    out = run_cli("run", "--modality", "synth_a", "--strategy", "sequential", "--preset", "tiny",
                  "--max-steps", "4", "--run-dir", str(tmp_path / "ddp"), "--nproc-per-node", "2", *SMALL,
                  env=synth_env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["finished"] is True
    assert out.stdout.count("run directory:") == 1
    assert sorted(p.name for p in (tmp_path).iterdir() if p.name.startswith("ddp")) == ["ddp"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_localhost_meet_through_c10d(tmp_path, synth_env):
    """Two "nodes" (one process each) on 127.0.0.1: one run, written once, by global rank 0."""
    import os

    port = _free_port()
    args = ["run", "--modality", "synth_a", "--strategy", "sequential", "--preset", "tiny", "--max-steps", "3",
            "--run-dir", str(tmp_path / "multi"), "--nnodes", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(port), *SMALL]
    env = {**os.environ, **synth_env, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "medkit.cli.main", *args, "--node-rank", str(r)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for r in (0, 1)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[1][-2000:] for o in outs)
    manifest = json.loads((tmp_path / "multi" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["finished"] is True
    steps = (tmp_path / "multi" / "metrics" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 3, "one writer: every step logged once"


@pytest.mark.slow
def test_resume_under_another_world_size_keeps_the_global_batch(tmp_path, synth_env):
    crashed = run_cli(*_run_args(tmp_path / "r", steps=6), env={**synth_env, "CRASH_AT": "1:5"})
    assert crashed.returncode == -9
    resumed = run_cli("run", "--resume", str(tmp_path / "r"), "--nproc-per-node", "2", env=synth_env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "keep the global batch of 4" in resumed.stderr
    assert "trainer.reduce=allreduce" in resumed.stderr and "will not be bit-identical" in resumed.stderr
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["finished"] is True and manifest["world_size"] == 2
    steps = read_jsonl(tmp_path / "r" / "metrics" / "steps.jsonl")
    assert [(s["stage"], s["step"]) for s in steps] == [(1, i) for i in range(1, 7)] + [(2, i) for i in range(1, 7)]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["sequential", "rehearsal"])
def test_two_ranks_of_b_equal_one_rank_of_2b(tmp_path, synth_env, strategy):
    """Per-sample randomness keyed by the global batch and the fixed-order reduction
    (trainer.reduce=ordered: 8 groups of 1 sample, one pairwise tree over them): the
    weights and every logged loss do not depend on how many processes trained them, to the bit,
    drop path and rehearsal's mixup included (mixup partners are drawn within a group)."""
    common = ["run", "--modality", "synth_a,synth_b", "--strategy", strategy, "--preset", "tiny",
              "--max-steps", "6", "encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3",
              "trainer.eval_batches=1", "trainer.checkpoint_every=1000", "trainer.reduce=ordered"]
    env = {**synth_env, "OMP_NUM_THREADS": "1"}  # one thread per process in both layouts
    one = run_cli(*common, "--run-dir", str(tmp_path / "one"), "trainer.batch_size=8", env=env, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli(*common, "--run-dir", str(tmp_path / "two"), "trainer.batch_size=4", "--nproc-per-node", "2",
                  env=env, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_tensors(tmp_path / "one" / "model.safetensors"), load_tensors(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == [], "1×8 and 2×4 differ"
    rows = [[{k: v for k, v in r.items() if k not in ("time_s", "data_s")}
             for r in read_jsonl(tmp_path / run / "metrics" / "steps.jsonl")] for run in ("one", "two")]
    assert rows[0] == rows[1] and len(rows[0]) == 12


@pytest.mark.slow
def test_two_runs_into_one_directory_one_runs_the_other_is_refused(tmp_path, synth_env):
    import os

    args = [sys.executable, "-m", "medkit.cli.main", *_run_args(tmp_path / "shared", steps=4)]
    env = {**os.environ, **synth_env, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, [o[1][-1500:] for o in outs]
    refused = next(o[1] for p, o in zip(procs, outs) if p.returncode != 0)
    lines = [ln for ln in refused.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and ("in use by PID" in lines[0] or "already holds a run" in lines[0]), refused[-1500:]
    assert "Traceback" not in refused
    ref = run_cli(*_run_args(tmp_path / "alone", steps=4), env=synth_env)
    assert ref.returncode == 0, ref.stderr[-2000:]
    a, b = load_tensors(tmp_path / "alone" / "model.safetensors"), load_tensors(tmp_path / "shared" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "the run that ran equals an uninterrupted one"
    steps = (tmp_path / "shared" / "metrics" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 8, "one writer: no interleaved rows"
