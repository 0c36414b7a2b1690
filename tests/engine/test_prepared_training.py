"""Training from ``medkit prepare`` output: the folder path's batches, split and bit-exact resume."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("litdata")

from medkit.data.prepare import prepare
from medkit.registry import create
from medkit.storage.files import load_tensors
from medkit.testing.faults import CommitPoints

SMALL = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
         "trainer.eval_batches=1", "trainer.probe_linear_steps=0", "trainer.probe_knn_k=0",
         "trainer.checkpoint_every=2", "modality.xray.input_size=64",
         "trainer.reduce=ordered"]  # the same bits on any world size (not the default: it costs time)
STEPS = 6

from tests.data.test_prepare import _fork  # noqa: E402  (one fork-and-report helper for both files)


def _train(run: Path, data: Path | None = None, *, kill_at: int | None = None, log: Path | None = None,
           resume: bool = False, extra: tuple[str, ...] = ()) -> int:
    def go() -> None:
        from medkit.api.progress import NullReporter
        from medkit.config.compose import Selection, compose
        from medkit.engine.engine import Engine, load_config
        from medkit.registry import get_host

        torch.set_num_threads(1)  # one thread, as each rank of a multi-process resume runs
        points = CommitPoints(run, kill_at=kill_at, log_file=log).install()
        host = get_host()
        if resume:
            Engine(load_config(run), run, components=host, reporter=NullReporter(), resume=True).run()
        else:
            cfg = compose(Selection(modalities=["xray"], strategy="sequential", preset="tiny",
                                    data={"xray": str(data)}, max_steps=STEPS, overrides=SMALL + list(extra)),
                          host=host)
            Engine(cfg, run, components=host, reporter=NullReporter()).run()
        points.uninstall()
    return _fork(go)


def _state(run: Path) -> dict[str, Any]:
    steps = [json.loads(x) for x in (run / "metrics" / "steps.jsonl").read_text().splitlines()]
    for s in steps:
        s.pop("time_s", None)
        s.pop("data_s", None)
    split = json.loads((run / "metrics" / "split.json").read_text())
    for m in split["modalities"].values():
        m.pop("data")
    return {"weights": load_tensors(run / "model.safetensors"), "steps": steps, "split": split}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run from a prepared copy of the demo folder as ``medkit prepare`` writes it
    by default (uint16 canvases of the run's input_size², cropped in torch at load), with the
    commit points it made."""
    root = tmp_path_factory.mktemp("prep-train")
    demo = Path(create("modality", "xray").demo_data(root / "demo"))
    prepare(create("modality", "xray", on_error="skip", input_size=64), demo, root / "prepared", part_size=8)
    log = root / "ops.jsonl"
    assert _train(root / "prep", root / "prepared", log=log) == 0
    ops = [json.loads(x) for x in log.read_text().splitlines()]
    return {"root": root, "demo": demo, "prepared": root / "prepared", "prep": _state(root / "prep"), "ops": ops}


@pytest.mark.slow
def test_training_from_prepared_data_is_the_folder_run(runs, tmp_path):
    """Same held-out split by source (metrics/split.json), same batches and per-sample seeds, so
    with float32 storage the very same weights, for prepared data in one chunk (the step plan's
    chunk-aware order is then the folder path's); prepared in many chunks, the same split and a
    chunk-aware order; DataLoader workers reading the shards give the same weights."""
    one = tmp_path / "one-chunk"
    prepare(create("modality", "xray", on_error="skip"), runs["demo"], one, part_size=256, store="float32",
            canvas="region")
    assert _train(tmp_path / "folder", runs["demo"]) == 0
    assert _train(tmp_path / "one", one) == 0
    assert _train(tmp_path / "workers", runs["prepared"], extra=("trainer.num_workers=2",)) == 0
    a, b, many = _state(tmp_path / "folder"), _state(tmp_path / "one"), runs["prep"]
    assert b["split"] == a["split"] and b["split"]["modalities"]["xray"]["val"]
    assert [s["loss"] for s in b["steps"]] == [s["loss"] for s in a["steps"]]
    assert not _same_weights(a["weights"], b["weights"])
    assert many["split"] == a["split"]
    assert [s["loss"] for s in many["steps"]] != [s["loss"] for s in a["steps"]], "many chunks: another order"
    assert not _same_weights(_state(tmp_path / "workers")["weights"], many["weights"])


def test_resume_from_prepared_data_is_bit_identical(runs, tmp_path):
    commits = [o["n"] for o in runs["ops"] if o["op"] == "symlink"]
    assert len(commits) >= 3
    n = commits[len(commits) // 2]  # a generation committed mid-run
    run = tmp_path / "killed"
    status = _train(run, runs["prepared"], kill_at=n)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert _train(run, resume=True) == 0
    got, want = _state(run), runs["prep"]
    assert got["steps"] == want["steps"] and got["split"] == want["split"]
    assert not _same_weights(got["weights"], want["weights"])


@pytest.mark.slow
def test_resume_from_prepared_data_under_two_processes(runs, tmp_path):
    """Killed with one process, resumed with two (gloo): the same steps, logged losses and weights
    as the one-process run, to the bit (trainer.reduce=ordered)."""
    from tests.conftest import run_cli

    n = [o["n"] for o in runs["ops"] if o["op"] == "symlink"][1]
    run = tmp_path / "killed"
    status = _train(run, runs["prepared"], kill_at=n)
    assert os.WIFSIGNALED(status)
    out = run_cli("run", "--resume", str(run), "--nproc-per-node", "2", env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "manifest.json").read_text())["world_size"] == 2
    got, want = _state(run), runs["prep"]
    assert got["steps"] == want["steps"] and got["split"] == want["split"]
    assert not _same_weights(got["weights"], want["weights"])
