"""The engine on synthetic modalities: stages, matrices, manifest, resume, determinism."""

from __future__ import annotations

from medkit.registry import get_host

import json
import shutil

import pytest
import torch

from medkit.storage.files import load_tensors
from medkit.eval.matrices import read_matrix
from medkit.testing.synthetic import run_synthetic


def _steps(run):
    from medkit.storage.jsonl import read_jsonl

    return read_jsonl(run / "metrics" / "steps.jsonl")  # medkit's own reader: no torn or glued line


def test_sequential_two_stages(tmp_path):
    run = run_synthetic(tmp_path / "r", "sequential", max_steps=4, demo_dir=tmp_path / "demo")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages_done"] == [["synth_a"], ["synth_b"]]
    assert manifest["finished"] is True
    assert set(manifest["files"]) >= {"model.safetensors", "config.yaml", "config.json"}
    mods, rows = read_matrix(run / "metrics" / "matrix.csv")
    assert mods == ["synth_a", "synth_b"]
    assert rows[0][0] is not None and rows[0][1] is None, "stage 1 evaluates only what it has seen"
    assert rows[1][0] is not None and rows[1][1] is not None
    steps = _steps(run)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert {s["modality"] for s in steps if s["stage"] == 2} == {"synth_b"}
    current = (run / "current").resolve()
    for name in ("model.safetensors", "manifest.json", "metrics", "checkpoint", "config.json"):
        assert (run / name).is_symlink() and (run / name).resolve().parent == current, \
            f"{name} is read through the current generation"
    assert current.parent == (run / "generations").resolve()
    assert sorted(p.name for p in current.parent.iterdir()) == ["g-00000002", "g-00000003", "run.json"], \
        "the newest keep_checkpoints=2 generations and the run's identity; no staging or temp file"
    state = load_tensors(run / "model.safetensors")
    assert any(k.startswith("encoder.blocks.") for k in state)
    assert any(k.startswith("heads.synth_a.") for k in state) and any(k.startswith("heads.synth_b.") for k in state)


def test_joint_interleaves_modalities_in_one_stage(tmp_path):
    run = run_synthetic(tmp_path / "r", "joint", max_steps=12, demo_dir=tmp_path / "demo")
    steps = _steps(run)
    assert {s["stage"] for s in steps} == {1}
    assert {s["modality"] for s in steps} == {"synth_a", "synth_b"}
    mods, rows = read_matrix(run / "metrics" / "matrix.csv")
    assert len(rows) == 1 and None not in rows[0]


def test_tfs_trains_nothing(tmp_path):
    run = run_synthetic(tmp_path / "r", "tfs", max_steps=4, demo_dir=tmp_path / "demo")
    assert not (run / "metrics" / "steps.jsonl").exists()
    assert (run / "model.safetensors").exists()


def test_loss_falls_with_training(tmp_path):
    run = run_synthetic(tmp_path / "r", "sequential", ("synth_a",), max_steps=30,
                        overrides=("optim.lr=2e-3",), demo_dir=tmp_path / "demo")
    losses = [s["loss"] for s in _steps(run)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_same_seed_same_weights_different_seed_differs(tmp_path):
    a = run_synthetic(tmp_path / "a", "sequential", ("synth_a",), max_steps=3, demo_dir=tmp_path / "demo")
    b = run_synthetic(tmp_path / "b", "sequential", ("synth_a",), max_steps=3, demo_dir=tmp_path / "demo")
    c = run_synthetic(tmp_path / "c", "sequential", ("synth_a",), max_steps=3, seed=1, demo_dir=tmp_path / "demo")
    wa, wb, wc = (load_tensors(r / "model.safetensors") for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_existing_run_dir_is_refused(tmp_path):
    from medkit.api.errors import ConfigError

    run_synthetic(tmp_path / "r", "sequential", ("synth_a",), max_steps=1, demo_dir=tmp_path / "demo")
    with pytest.raises(ConfigError, match="--resume"):
        run_synthetic(tmp_path / "r", "sequential", ("synth_a",), max_steps=1, demo_dir=tmp_path / "demo")


def test_lr_schedule_warmup_then_cosine():
    from medkit.engine.engine import lr_at

    lrs = [lr_at(s, 100, base_lr=1.0, min_lr=0.0, warmup_fraction=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_weight_decay_groups_follow_timm_rule():
    from medkit.engine.engine import param_groups

    lin = torch.nn.Linear(3, 3)
    ln = torch.nn.LayerNorm(3)
    groups = param_groups([("l.weight", lin.weight), ("l.bias", lin.bias), ("n.weight", ln.weight)], 0.05)
    assert groups[0]["weight_decay"] == 0.05 and groups[0]["params"] == [lin.weight]
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 2


def test_resume_cleans_what_a_crash_left_and_a_finished_run_stays_as_it_is(tmp_path, caplog):
    from medkit.engine.engine import Engine, load_config
    from medkit.api.progress import NullReporter

    run = run_synthetic(tmp_path / "r", "sequential", ("synth_a",), max_steps=2, demo_dir=tmp_path / "demo")
    staging = run / "generations" / ".staging-crashed"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"half")
    current = (run / "current").resolve()
    ident = json.loads((current / "generation.json").read_text())
    uncommitted = run / "generations" / f"g-{ident['generation'] + 1:08d}"  # renamed into place, never committed
    shutil.copytree(current, uncommitted)
    (uncommitted / "generation.json").write_text(json.dumps({**ident, "generation": ident["generation"] + 1}))
    unknown = run / "generations" / "g-00000099"  # no identity: not provably this run's, so never deleted
    unknown.mkdir()
    before = {p.name: p.read_bytes() for p in (run / "metrics").iterdir()}
    with caplog.at_level("INFO"):
        Engine(load_config(run), run, components=get_host(), reporter=NullReporter(), resume=True).run()
    assert not staging.exists() and not uncommitted.exists() and unknown.is_dir()
    assert "is already complete (all 1 stage(s) done); nothing to resume" in caplog.text
    assert "resuming" not in caplog.text, "a finished run is not announced as resumed at a stage past its last"
    assert (run / "current").resolve() == current
    assert {p.name: p.read_bytes() for p in (run / "metrics").iterdir()} == before


def test_accumulated_micro_batches_equal_one_batch(tmp_path):
    """trainer.accum_steps=2 runs each step's 8 samples as two micro-batches of 4: the same weights
    as one batch of 8 (to float tolerance), with half the activations in memory."""
    from medkit.storage.files import load_tensors

    runs = {k: run_synthetic(tmp_path / f"accum{k}", "sequential", ("synth_a",), max_steps=4,
                             overrides=("trainer.batch_size=8", f"trainer.accum_steps={k}"),
                             demo_dir=tmp_path / "demo") for k in (1, 2)}
    a, b = load_tensors(runs[1] / "model.safetensors"), load_tensors(runs[2] / "model.safetensors")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())
    assert worst < 1e-5, f"accumulated and whole batches differ by {worst:.2e}"
