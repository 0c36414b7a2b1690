"""``trainer.accum_steps`` under ``trainer.reduce=ordered``: the groups of k micro-batches, in the same tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medkit.api.errors import ConfigError
from medkit.engine.ordered import group_size, reduce_record
from medkit.testing.synthetic import run_synthetic


def test_accumulation_makes_the_groups_of_its_micro_batches():
    assert group_size(64) == 8 and group_size(64, accum_steps=2) == 4 and group_size(64, accum_steps=16) == 1
    assert group_size(48, accum_steps=3) == 2  # micro-batches of 16: 8 groups of 2 each
    assert group_size(64, 4, accum_steps=2) == 4, "an explicit group that divides a micro-batch is kept"
    with pytest.raises(ConfigError, match=r"trainer.reduce_group=16 does not divide the micro-batch of 8 .*"
                                          r"trainer.accum_steps=8"):
        group_size(64, 16, accum_steps=8)
    with pytest.raises(ConfigError, match="trainer.accum_steps=3 does not divide the global batch of 64"):
        group_size(64, accum_steps=3)
    assert reduce_record("ordered", 0, 64, 2) == {"mode": "ordered", "group": 4}
    assert reduce_record("allreduce", 0, 64, 2) == {"mode": "allreduce"}


def _steps(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics" / "steps.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time_s", "data_s")} for r in rows]


def test_accumulated_steps_are_bit_identical_to_the_same_groups_in_one_step(tmp_path):
    """Before, accum_steps was not used under ordered: each step ran the default groups of the
    whole batch (2 samples for a batch of 16), as much memory per forward as without it."""
    import torch

    from medkit.storage.files import load_tensors

    common = ("trainer.batch_size=16", "trainer.reduce=ordered", "trainer.eval_batches=1")
    runs = {name: run_synthetic(tmp_path / name, "sequential", ("synth_a",), max_steps=3, overrides=common + extra,
                                demo_dir=tmp_path / "demo")
            for name, extra in (("accum", ("trainer.accum_steps=2",)), ("groups", ("trainer.reduce_group=1",)))}
    reduce = {name: json.loads((run / "manifest.json").read_text())["reduce"] for name, run in runs.items()}
    assert reduce["accum"] == reduce["groups"] == {"mode": "ordered", "group": 1}, reduce
    a, b = (load_tensors(runs[n] / "model.safetensors") for n in ("accum", "groups"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _steps(runs["accum"]) == _steps(runs["groups"])


@pytest.mark.slow
def test_accumulated_ordered_steps_are_the_same_bits_on_two_processes(tmp_path):
    """1 process × 16 samples and 2 × 8, both with accum_steps=2: the group (1 sample, the default
    of a micro-batch of 8) is a function of the global batch and accum_steps, so the tree is the same."""
    import os

    import torch

    from medkit.storage.files import load_tensors
    from tests.conftest import make_dist, run_cli

    make_dist(tmp_path / "site", "medkit-synthetic", "medkit_synth",
              "from medkit.testing.synthetic import *  # noqa\n"
              "from medkit.testing.synthetic import medkit_register_modalities, MEDKIT_API_VERSION\n")
    env = {"PYTHONPATH": f"{os.environ.get('PYTHONPATH', '')}:{tmp_path / 'site'}".lstrip(":"),
           "MEDKIT_DEMO_DIR": str(tmp_path / "demo"), "OMP_NUM_THREADS": "1"}
    common = ["run", "--modality", "synth_a", "--strategy", "sequential", "--preset", "tiny", "--max-steps", "3",
              "encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.eval_batches=1",
              "trainer.checkpoint_every=1000", "trainer.reduce=ordered", "trainer.accum_steps=2"]
    one = run_cli(*common, "--run-dir", str(tmp_path / "one"), "trainer.batch_size=16", env=env, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli(*common, "--run-dir", str(tmp_path / "two"), "trainer.batch_size=8", "--nproc-per-node", "2",
                  env=env, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    for run, world in (("one", 1), ("two", 2)):
        manifest = json.loads((tmp_path / run / "manifest.json").read_text())
        assert manifest["world_size"] == world and manifest["reduce"] == {"mode": "ordered", "group": 1}
    a, b = (load_tensors(tmp_path / run / "model.safetensors") for run in ("one", "two"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == [], "1×16 and 2×8 differ"
    assert _steps(tmp_path / "one") == _steps(tmp_path / "two")
