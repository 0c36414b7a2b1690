"""Steps stay on the device until a sync point: the step log, progress and events are as before;
a non-finite loss still stops the run, naming the step and its samples, before any checkpoint holds it."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from medkit.api.batch import Batch
from medkit.api.context import LossOutput
from medkit.api.errors import DataError
from medkit.engine.step import StepResult, TrainStep, resolve
from medkit.testing.synthetic import run_synthetic

TIMES = ("time_s", "data_s")


def _rows(run):
    return [json.loads(line) for line in (run / "metrics" / "steps.jsonl").read_text().splitlines()]


def _record_step_events(monkeypatch):
    from medkit.registry.host import PluginHost

    seen, real = [], PluginHost.emit

    def emit(self, event, **kwargs):
        if event == "step_end":
            seen.append((kwargs["stage"].index, kwargs["step"], dict(kwargs["metrics"])))
        return real(self, event, **kwargs)

    monkeypatch.setattr(PluginHost, "emit", emit)
    return seen


@pytest.mark.slow
def test_synced_every_seven_steps_logs_what_every_step_sync_logs(tmp_path, monkeypatch):
    """log_every=1 reads every step's loss at once (the old per-step float()); log_every=7 reads them
    in bursts, with a checkpoint (and its flush) at step 4 in between: the same rows, keys in the same
    order, the same values, and a step_end event per step, in order, with the logged values."""
    runs, events = {}, {}
    for every in (1, 7):
        events[every] = _record_step_events(monkeypatch)
        runs[every] = run_synthetic(tmp_path / f"every{every}", "sequential", max_steps=10,
                                    overrides=(f"trainer.log_every={every}", "trainer.checkpoint_every=4"),
                                    demo_dir=tmp_path / "demo")
        monkeypatch.undo()
    a, b = _rows(runs[1]), _rows(runs[7])
    assert [r["step"] for r in a] == list(range(1, 11)) * 2
    assert [list(r) for r in a] == [list(r) for r in b]
    strip = [[{k: v for k, v in r.items() if k not in TIMES} for r in rows] for rows in (a, b)]
    assert strip[0] == strip[1]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in a)
    for every, rows in ((1, a), (7, b)):
        assert [(s, n) for s, n, _ in events[every]] == [(r["stage"] - 1, r["step"]) for r in rows]
        assert [m for _, _, m in events[every]] == [{k: v for k, v in r.items() if k not in
                                                    ("stage", "step", "modality", "role", *TIMES)} for r in rows]


def test_a_nan_step_raises_naming_its_samples_and_is_never_checkpointed(tmp_path, monkeypatch):
    """NaN at step 3 of 8, a checkpoint every 2 steps, a sync every 10: the error comes at the latest
    at step 4's checkpoint, names step 3 and its samples, and the run's current checkpoint is step 2."""
    from medkit.strategies.base import BaseStrategy
    from medkit.strategies.reference import Sequential

    bad, calls = {}, []

    def loss(self, ctx, batch):
        out = BaseStrategy.loss(self, ctx, batch)
        calls.append(ctx.step + 1)
        if ctx.step + 1 == 3:
            bad["ids"] = list(batch.ids)
            return LossOutput(out.loss * float("nan"), out.metrics)
        return out

    monkeypatch.setattr(Sequential, "loss", loss)
    run = tmp_path / "r"
    with pytest.raises(DataError) as info:
        run_synthetic(run, "sequential", ("synth_a",), max_steps=8,
                      overrides=("trainer.log_every=10", "trainer.checkpoint_every=2"), demo_dir=tmp_path / "demo")
    message = str(info.value)
    assert "the loss is nan at stage 1 step 3 on synth_a batch" in message, message
    assert all(i in message for i in bad["ids"]), (bad, message)
    assert max(calls) <= 4, f"the error came {max(calls) - 3} steps late, past the checkpoint at step 4"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["current"] == {"stage": 1, "step": 2}
    assert [r["step"] for r in _rows(run)] == [1, 2]


def _tiny_step():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    step = TrainStep(opt, params=list(lin.parameters()), device=torch.device("cpu"))
    batch = Batch("m", torch.randn(4, 3), ids=["a", "b", "c", "d"])
    return lin, step, batch


def test_a_synced_step_refuses_before_the_weights_change_and_a_deferred_one_when_read():
    lin, step, batch = _tiny_step()
    before = [p.detach().clone() for p in lin.parameters()]

    def nan_loss(b):
        return LossOutput(lin(b.inputs).mean() * float("nan"), {"m": torch.tensor(1.0)})

    with pytest.raises(DataError, match="the loss is nan on m batch a, b, c, d"):
        step(nan_loss, batch)
    assert all(torch.equal(p, q) for p, q in zip(lin.parameters(), before))
    out = step(nan_loss, batch.split(2), sync=False)  # no check yet
    with pytest.raises(DataError, match="the loss is nan on m batch a, b"):
        out.values()


def test_resolve_gives_what_float_gives_with_accumulation():
    lin, step, batch = _tiny_step()
    seen = []

    def loss(b):
        value = (lin(b.inputs) ** 2).mean()
        seen.append((float(value.detach()), float(value.detach() * 3)))
        return LossOutput(value, {"tensor": value.detach() * 3, "plain": 0.5, "inf": float("inf")})

    results = [step(loss, batch.split(2), sync=False) for _ in range(3)]
    values = resolve(results)
    for k, (res, vals) in enumerate(zip(results, values)):
        (l1, t1), (l2, t2) = seen[2 * k], seen[2 * k + 1]
        assert vals == {"loss": float(res.loss), "tensor": (t1 + t2) / 2, "plain": 0.5}
        assert vals["loss"] == float((torch.tensor(l1) + torch.tensor(l2)) / 2)
    assert isinstance(results[0], StepResult) and results[0].loss.device.type == "cpu"


_RANK_SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist
from medkit.api.errors import DataError
from medkit.engine.step import StepResult
from medkit.engine.steplog import StepLog

dist.init_process_group("gloo")
rank = dist.get_rank()
class Record:
    pending_steps = []
log = StepLog(10, Record(), lambda n, m: None)
for step in (1, 2):
    value = float("nan") if (rank == 1 and step == 2) else 0.5
    loss = torch.tensor(value)
    log.add(StepResult(loss=loss, losses=loss.reshape(1), described=[f"batch of rank {rank}"]),
            stage=1, step=step, modality="m", role="current", lr=0.1, time_s=0.0, data_s=0.0)
try:
    log.flush()
    print(json.dumps({"rank": rank, "error": None}))
except DataError as e:
    print(json.dumps({"rank": rank, "error": str(e)}))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank(tmp_path):
    """Both ranks raise at the same sync point (no rank is left waiting in a collective): the rank
    that saw the NaN names its samples, the other says another rank's loss was not finite."""
    import json
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    errors = {json.loads(o[0].strip().splitlines()[-1])["rank"]: json.loads(o[0].strip().splitlines()[-1])["error"]
              for o in outs}
    assert errors[1] and "nan" in errors[1] and "batch of rank 1" in errors[1] and "step 2" in errors[1]
    assert errors[0] and "another rank" in errors[0] and "step 1 and step 2" in errors[0]
