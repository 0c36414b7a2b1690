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
