"""Benchmark: the cost of ``trainer.reduce=ordered`` (bit-identical on any world size) against
``allreduce`` (DDP), at one process and at two (gloo, one thread per process).

Each configuration runs the engine's own training step (:func:`medkit.engine.layout.step_factory`,
the AdamW of :func:`medkit.engine.schedule.adamw`) on an X-ray MAE model built the way a run builds
it (:func:`medkit.config.compose.compose`, :func:`medkit.models.build.build_model`), at the same
global batch for 1 and 2 processes; ``ordered`` runs the default groups of
:func:`medkit.engine.ordered.group_size` unless ``--group`` says otherwise. Processes are forked
and joined into a gloo group for N > 1. A configuration times ``--steps`` steps after ``--warmup``
and reports the median step (rank 0; every rank waits for the others at each step's reduction).
Configurations run one after another, repetitions interleaved, so machine load hits all alike.

    python bench/reduce_order.py                                    # tiny and small, 1 and 2 processes
    python bench/reduce_order.py --presets tiny --global-batch 32 --steps 10 --reps 3

Prints a table (s/step, steps/s, ordered's cost against allreduce at the same N) and writes JSON
(default ``bench/results/reduce_order.json``) with every repetition and ``uptime``'s load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load

#: preset -> (input size of the 2D X-ray samples, global batch default)
PRESETS: dict[str, tuple[int, int]] = {"tiny": (64, 16), "small": (224, 8)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, preset: str, mode: str, args: argparse.Namespace, out: str) -> None:
    import torch
    import torch.distributed as dist

    from medkit.api.batch import collate
    from medkit.config.compose import Selection, compose
    from medkit.config.typed import RunSettings
    from medkit.engine.distributed import World
    from medkit.engine.layout import ordered_groups, step_factory
    from medkit.engine.schedule import adamw, param_groups
    from medkit.models.build import build_model
    from medkit.registry import get_host

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    size, _ = PRESETS[preset]
    per_rank = args.global_batch_of[preset] // world
    host = get_host()
    overrides = [f"modality.xray.input_size={size}", f"trainer.batch_size={per_rank}", f"trainer.reduce={mode}",
                 f"trainer.reduce_group={args.group}"]
    cfg = compose(Selection(modalities=["xray"], strategy="sequential", preset=preset, overrides=overrides),
                  host=host)
    torch.manual_seed(0)
    model = build_model(cfg, create=host.create)
    modules = model.modules().train()
    settings, w = RunSettings.of(cfg), World(rank=rank, world_size=world)
    device = torch.device("cpu")
    optimizer = adamw(param_groups([(n, p) for n, p in modules.named_parameters() if p.requires_grad], 0.05),
                      lr=1e-4, betas=[0.9, 0.95], device=device)
    groups = ordered_groups(settings, w)
    step = step_factory(modules, settings, w, device)(optimizer, groups=groups)
    encoder, head = model.encoder, model.heads["xray"]
    tok = encoder.tokenizers[model.tokenizer_of["xray"]]
    g = torch.Generator().manual_seed(1)
    samples = [{"input": torch.rand(3, size, size, generator=g), "id": f"s{i}"}
               for i in range(args.global_batch_of[preset])]
    batch = collate(samples[rank * per_rank:(rank + 1) * per_rank], "xray", tok)
    batch.seeds = list(range(rank * per_rank, (rank + 1) * per_rank))
    accum = settings.trainer.accum_steps
    times = []
    for k in range(args.warmup + args.steps):
        micro = batch.split(groups) if groups is not None else batch.split(accum) if accum > 1 else batch
        t0 = time.perf_counter()
        out_step = step(lambda b: head(encoder, b), micro, lr=1e-4, sync=False)
        float(out_step.loss)
        if k >= args.warmup:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps({"step_s": statistics.median(times), "times": times, "groups": groups}))
    if world > 1:
        dist.destroy_process_group()


def measure(preset: str, mode: str, nproc: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        mp.start_processes(_worker, args=(nproc, _port(), preset, mode, args, out), nprocs=nproc,
                           start_method="fork")
        return json.loads(Path(out).read_text())


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'preset':<7}{'global':>7}{'N':>3}  {'reduce':<10}{'groups/rank':>12}{'s/step':>9}{'steps/s':>9}"
             f"{'vs allreduce':>14}"]
    base = {(r["preset"], r["nproc"]): r["step_s"] for r in rows if r["mode"] == "allreduce"}
    for r in rows:
        ref = base.get((r["preset"], r["nproc"]))
        cost = f"{100 * (r['step_s'] / ref - 1):+.1f}%" if ref and r["mode"] == "ordered" else ""
        lines.append(f"{r['preset']:<7}{r['global_batch']:>7}{r['nproc']:>3}  {r['mode']:<10}"
                     f"{str(r['groups'] or '-'):>12}{r['step_s']:>9.4f}{1 / r['step_s']:>9.2f}{cost:>14}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--global-batch", type=int, default=0, help="0: the preset's default (tiny 16, small 8)")
    p.add_argument("--group", type=int, default=0, help="trainer.reduce_group (0: the default groups)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "reduce_order.json"))
    args = p.parse_args(argv)
    presets = [s for s in args.presets.split(",") if s]
    args.global_batch_of = {s: args.global_batch or PRESETS[s][1] for s in presets}
    procs = [int(n) for n in args.procs.split(",")]
    before = load()
    reps: dict[tuple[str, str, int], list[float]] = {}
    groups: dict[tuple[str, str, int], Any] = {}
    for _ in range(args.reps):
        for preset in presets:
            for nproc in procs:
                for mode in ("allreduce", "ordered"):
                    got = measure(preset, mode, nproc, args)
                    reps.setdefault((preset, mode, nproc), []).append(got["step_s"])
                    groups[(preset, mode, nproc)] = got["groups"]
    rows = [{"preset": k[0], "mode": k[1], "nproc": k[2], "global_batch": args.global_batch_of[k[0]],
             "groups": groups[k], "step_s": statistics.median(v), "reps": v} for k, v in reps.items()]
    print(table(rows))
    result = {"rows": rows, "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                                     "python": platform.python_version()},
              "threads_per_process": 1, "steps": args.steps, "warmup": args.warmup,
              "load_before": before, "load_after": load()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
