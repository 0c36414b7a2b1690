"""Config mistakes through the command line: refused in one line before a run directory exists; a
received config.yaml is never resolved by --resume, finetune --from or evaluate; safe resume overrides."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from ..conftest import make_dist, run_cli

SYNTH = ("from medkit.testing.synthetic import *  # noqa\n"
         "from medkit.testing.synthetic import medkit_register_modalities, MEDKIT_API_VERSION\n")
#: Records what the engine was handed (run_start) so a test can see the resume overrides arrive;
#: CRASH_AT=stage:step kills the run there (an interrupted run to resume).
RECORDER = """
import json, os, signal
from medkit.api import hookimpl
MEDKIT_API_VERSION = 1
@hookimpl
def medkit_on_step_end(run, stage, step, metrics):
    if os.environ.get("CRASH_AT") == f"{stage.index}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
@hookimpl
def medkit_on_run_start(run):
    out = os.environ.get("RECORD_RUN_START")
    if out:
        cfg = run.config
        with open(out, "w") as f:
            json.dump({"resume_overrides": cfg["run"].get("resume_overrides"), "lr": cfg["optim"]["lr"],
                       "max_steps": cfg["trainer"]["max_steps"], "resumed": run.resumed}, f)
"""
SMALL = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
         "trainer.eval_batches=1", "trainer.probe_linear_steps=0", "trainer.probe_knn_k=0"]


@pytest.fixture(scope="module")
def synth_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("site")
    make_dist(root / "synth", "medkit-synthetic", "medkit_synth", SYNTH)
    make_dist(root / "rec", "medkit-recorder", "medkit_recorder", RECORDER)
    inherited = os.environ.get("PYTHONPATH", "")  # keep a worktree's src first, as in this process
    return {"PYTHONPATH": f"{inherited}:{root / 'synth'}:{root / 'rec'}".lstrip(":"),
            "MEDKIT_DEMO_DIR": str(root / "demo")}


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory, synth_env: dict[str, str]) -> Path:
    """A run killed at step 3 of 4 (checkpointed at step 2)."""
    run = tmp_path_factory.mktemp("runs") / "a"
    out = run_cli("run", "--modality", "synth_a", "--strategy", "sequential", "--preset", "tiny", "--max-steps", "4",
                  "--run-dir", str(run), *SMALL, "trainer.checkpoint_every=2", env={**synth_env, "CRASH_AT": "0:3"})
    assert out.returncode == -9, out.stderr
    return run


@pytest.fixture()
def run_copy(interrupted_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(interrupted_run, tmp_path / "run", symlinks=True))  # generations link by name


def _one_line(out, *needles: str) -> str:
    assert out.returncode != 0, out.stdout + out.stderr
    # a loaded machine may make the synthetic plugin (it imports torch) trip the slow-import warning
    lines = [line for line in out.stderr.strip().splitlines()
             if not (re.match(r"\S+ warning: plugin medkit_synth", line) and "import" in line)]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.mark.parametrize("override, needles", [
    ("trainer.max_steps=abc", ["trainer.max_steps", "'abc'", "int"]),
    ("optim.lr=fast", ["optim.lr", "'fast'", "float"]),
    ("trainer.nope=1", ["trainer.nope", "no config key"]),
])
@pytest.mark.slow
def test_run_refuses_a_bad_typed_override_before_any_run_directory(tmp_path: Path, override: str,
                                                                   needles: list[str]) -> None:
    out = run_cli("run", "--modality", "ct", "--strategy", "sequential", override, cwd=tmp_path)
    _one_line(out, *needles)
    assert not (tmp_path / "runs").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_config_show_prints_the_typed_sections(synth_env: dict[str, str]) -> None:
    out = run_cli("config", "show", "--modality", "synth_a", "--preset", "tiny", "trainer.max_steps=5", env=synth_env)
    assert out.returncode == 0, out.stderr
    for line in ("max_steps: 5", "probe_knn_vote: weighted", "lr: 0.001", "preset: tiny", "warmup_fraction:"):
        assert line in out.stdout
    _one_line(run_cli("config", "show", "--modality", "synth_a", "optim.lr=fast", env=synth_env), "optim.lr")


def _plant(run: Path, old: str, new: str) -> None:
    path = run / "config.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.slow
def test_resume_never_resolves_an_interpolation(run_copy: Path, synth_env: dict[str, str], tmp_path: Path) -> None:
    _plant(run_copy, "device: auto", "device: ${oc.env:MEDKIT_TEST_SECRET}")
    before = {p: p.lstat().st_mtime_ns for p in run_copy.rglob("*")}
    env = {**synth_env, "MEDKIT_TEST_SECRET": "cpu-secret-9f8e", "RECORD_RUN_START": str(tmp_path / "rec.json")}
    out = run_cli("run", "--resume", str(run_copy), env=env)
    line = _one_line(out, str(run_copy / "config.yaml"), "trainer.device", "interpolation")
    assert "cpu-secret-9f8e" not in out.stderr + out.stdout and "cpu-secret" not in line
    assert not (tmp_path / "rec.json").exists(), "the engine never started"
    assert {p: p.lstat().st_mtime_ns for p in run_copy.rglob("*")} == before, "the run directory is untouched"


@pytest.mark.slow
def test_resume_names_the_file_of_a_malformed_config(run_copy: Path, synth_env: dict[str, str]) -> None:
    _plant(run_copy, "trainer:", "trainer: [")
    line = _one_line(run_cli("run", "--resume", str(run_copy), env=synth_env), str(run_copy / "config.yaml"),
                     "not valid YAML at line")
    assert "<unicode string>" not in line


@pytest.mark.slow
def test_resume_refuses_unsafe_overrides_listing_the_allowed(run_copy: Path, synth_env: dict[str, str]) -> None:
    line = _one_line(run_cli("run", "--resume", str(run_copy), "encoder.depth=3", env=synth_env),
                     "encoder.depth cannot change on resume", "allowed: optim.lr, optim.min_lr, trainer.max_steps")
    assert "trainer.eval_batches" in line
    _one_line(run_cli("run", "--resume", str(run_copy), "trainer.max_steps=abc", env=synth_env),
              "trainer.max_steps expects int, got 'abc'")
    _one_line(run_cli("run", "--resume", str(run_copy), "--modality", "synth_a", env=synth_env), "--modality")


@pytest.mark.slow
def test_resume_applies_safe_overrides_and_hands_them_to_the_engine(run_copy: Path, synth_env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    record = tmp_path / "rec.json"
    out = run_cli("run", "--resume", str(run_copy), "optim.lr=5e-4", "--max-steps", "5", "trainer.num_workers=0",
                  env={**synth_env, "RECORD_RUN_START": str(record)})
    assert out.returncode == 0, out.stderr
    seen = json.loads(record.read_text())
    applied = ["optim.lr=0.0005", "trainer.num_workers=0", "trainer.max_steps=5"]
    assert seen == {"resume_overrides": applied, "lr": 5e-4, "max_steps": 5, "resumed": True}
    manifest = json.loads((run_copy / "manifest.json").read_text())
    assert manifest["finished"] is True and manifest.get("resume_overrides") == applied


@pytest.mark.slow
def test_finetune_from_and_evaluate_never_resolve_an_interpolation(run_copy: Path, synth_env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    _plant(run_copy, "preset: tiny", "preset: ${oc.env:MEDKIT_TEST_SECRET}")
    env = {**synth_env, "MEDKIT_TEST_SECRET": "tiny"}  # resolving it would even "work"
    out = run_cli("finetune", "--task", "classification", "--modality", "xray", "--from", str(run_copy),
                  "--max-steps", "1", "--run-dir", str(tmp_path / "ft"), env=env)
    _one_line(out, str(run_copy / "config.yaml"), "encoder.preset", "interpolation")
    assert not (tmp_path / "ft").exists()
    evaluated = tmp_path / "ev"
    evaluated.mkdir()
    (evaluated / "config.yaml").write_text("run:\n  task: classification\n  data: ${oc.env:HOME}\n")
    _one_line(run_cli("evaluate", str(evaluated), env=env), str(evaluated / "config.yaml"), "run.data")
    assert set(os.listdir(evaluated)) - {".medkit.lock"} == {"config.yaml"}, "nothing evaluated or written"
