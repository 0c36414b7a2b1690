"""Benchmark: training throughput of 1 vs N processes on the same global batch, through ``medkit run``.

Each configuration is a real ``medkit run`` (``--nproc-per-node N`` for N > 1, one thread per
process), so this measures whatever the engine does for data parallelism. The per-step time is the
difference of two runs that differ only in ``--max-steps``::

    step_s = (wall(steps_long) − wall(steps_short)) / (steps_long − steps_short)

which cancels start-up, data indexing, the end-of-stage evaluation and the final checkpoint (periodic
checkpoints are pushed past the run with ``trainer.checkpoint_every``). Where the engine writes a time
per step into ``metrics/steps.jsonl``, the median of every such field is reported too. Runs are
interleaved (for each repetition: every N, every length) so that machine load hits all alike.

The global batch is kept equal across N: ``trainer.batch_size`` is set to ``global / N`` (the
engine's per-rank batch today); pass ``--batch-is-global`` if the engine's ``trainer.batch_size``
becomes the global batch.

    python bench/ddp_scaling.py                                   # tiny preset, xray demo data, 1 vs 2
    python bench/ddp_scaling.py --preset small --global-batch 32 --steps 4,12 --reps 2
    python bench/ddp_scaling.py --device cuda --amp --procs 1,2,4,8 --global-batch 512 --preset base

Prints a table (s/step, steps/s, samples/s and per device, speed-up, efficiency = speed-up / N) and
writes JSON (default ``bench/results/ddp_scaling.json``) with ``uptime``'s load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load

#: Fields of a ``steps.jsonl`` record that are not timings.
_NOT_TIME = {"stage", "step", "loss", "lr", "modality", "role"}




def step_timings(run_dir: Path) -> dict[str, float]:
    """Median of each time-like numeric field of ``metrics/steps.jsonl`` (per-step durations; a
    field that only grows, like a timestamp, is differenced first). Empty when there is none."""
    path = run_dir / "metrics" / "steps.jsonl"
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out: dict[str, float] = {}
    keys = {k for r in records for k, v in r.items()
            if k not in _NOT_TIME and isinstance(v, (int, float)) and ("time" in k or k.endswith("_s"))}
    for key in sorted(keys):
        vals = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if len(vals) < 3:
            continue
        if all(b >= a for a, b in zip(vals, vals[1:])) and vals[-1] > 1e3:  # a clock, not durations
            vals = [b - a for a, b in zip(vals, vals[1:])]
        out[key] = statistics.median(vals[1:])  # the first step pays for warm-up
    return out


def medkit_run(args: argparse.Namespace, nproc: int, steps: int, run_dir: Path) -> dict[str, Any]:
    """One ``medkit run`` of ``steps`` steps on ``nproc`` processes; its wall time and step timings."""
    per_rank = args.global_batch if args.batch_is_global else args.global_batch // nproc
    cmd = [sys.executable, "-m", "medkit.cli.main", "run", "--modality", args.modality,
           "--strategy", args.strategy, "--preset", args.preset, "--max-steps", str(steps),
           "--seed", "0", "--run-dir", str(run_dir)]
    if args.data:
        cmd += ["--data", args.data]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]
    cmd += [f"trainer.batch_size={per_rank}", f"trainer.checkpoint_every={10 * steps + 1000}",
            f"trainer.log_every={max(steps, 1)}"]
    if args.device != "cpu":
        cmd.append(f"trainer.device={args.device}")
    if args.amp:
        cmd.append("trainer.amp=true")
    cmd += list(args.override)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        tail = (out.stderr.strip() or out.stdout.strip()).splitlines()[-3:]
        return {"nproc": nproc, "steps": steps, "error": " | ".join(tail) or f"exit {out.returncode}"}
    return {"nproc": nproc, "steps": steps, "per_rank_batch": per_rank, "wall_s": wall,
            "jsonl": step_timings(run_dir)}


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per N: median step time from the run-length differences, throughput, speed-up, efficiency."""
    short, long_ = args.step_counts
    rows = []
    for n in args.nprocs:
        mine = [r for r in runs if r["nproc"] == n]
        errors = [r["error"] for r in mine if "error" in r]
        if errors:
            rows.append({"nproc": n, "error": errors[0]})
            continue
        by_rep: dict[int, dict[int, float]] = {}
        for r in mine:
            by_rep.setdefault(r["rep"], {})[r["steps"]] = r["wall_s"]
        diffs = [(w[long_] - w[short]) / (long_ - short) for w in by_rep.values() if short in w and long_ in w]
        step_s = statistics.median(diffs)
        jsonl: dict[str, list[float]] = {}
        for r in mine:
            if r["steps"] == long_:
                for k, v in r["jsonl"].items():
                    jsonl.setdefault(k, []).append(v)
        rows.append({"nproc": n, "per_rank_batch": mine[0]["per_rank_batch"], "step_s": step_s,
                     "step_s_reps": diffs, "steps_per_s": 1.0 / step_s,
                     "samples_per_s": args.global_batch / step_s,
                     "samples_per_s_per_device": args.global_batch / step_s / n,
                     "jsonl_medians": {k: statistics.median(v) for k, v in jsonl.items()}})
    base = next((r for r in rows if r["nproc"] == 1 and "error" not in r), None)
    for r in rows:
        if base is not None and "error" not in r:
            r["speedup"] = r["steps_per_s"] / base["steps_per_s"]
            r["efficiency"] = r["speedup"] / r["nproc"]
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (f"{'procs':>6}{'thr':>5}{'device':>8}{'global B':>10}{'B/rank':>8}{'s/step':>9}{'steps/s':>9}"
            f"{'samp/s':>9}{'samp/s/dev':>12}{'speed-up':>10}{'effic.':>8}  jsonl step timings (median s)")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['nproc']:>6} failed: {r['error']}")
            continue
        js = ", ".join(f"{k}={v:.3f}" for k, v in r["jsonl_medians"].items()) or "-"
        lines.append(f"{r['nproc']:>6}{args.threads:>5}{args.device:>8}{args.global_batch:>10}"
                     f"{r['per_rank_batch']:>8}{r['step_s']:>9.3f}{r['steps_per_s']:>9.2f}"
                     f"{r['samples_per_s']:>9.1f}{r['samples_per_s_per_device']:>12.1f}"
                     f"{r.get('speedup', float('nan')):>10.2f}{r.get('efficiency', float('nan')):>8.2f}  {js}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", default="1,2", help="comma-separated process counts; 1 is the baseline")
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--global-batch", type=int, default=32, help="samples per optimizer step, all ranks")
    p.add_argument("--batch-is-global", action="store_true",
                   help="trainer.batch_size is the global batch (default: per rank, as the engine has it)")
    p.add_argument("--steps", default="5,25", help="SHORT,LONG run lengths whose difference is timed")
    p.add_argument("--reps", type=int, default=1, help="repetitions (interleaved)")
    p.add_argument("--preset", default="tiny", help="encoder preset")
    p.add_argument("--modality", default="xray", help="modality")
    p.add_argument("--data", default=None, help="the modality's data folder (default: built-in demo data)")
    p.add_argument("--strategy", default="sequential", help="strategy")
    p.add_argument("--device", default="cpu", help="trainer.device (cpu, cuda)")
    p.add_argument("--amp", action="store_true", help="trainer.amp=true (bf16 autocast)")
    p.add_argument("--override", action="append", default=[], help="extra KEY=VALUE for medkit run")
    p.add_argument("--keep", action="store_true", help="keep the run directories (printed)")
    p.add_argument("--out", default="bench/results/ddp_scaling.json", help="JSON results file")
    args = p.parse_args(argv)
    args.nprocs = [int(v) for v in args.procs.split(",") if v.strip()]
    args.step_counts = tuple(int(v) for v in args.steps.split(","))
    if len(args.step_counts) != 2 or not 0 < args.step_counts[0] < args.step_counts[1]:
        p.error("--steps takes SHORT,LONG with 0 < SHORT < LONG")
    if 1 not in args.nprocs:
        args.nprocs.insert(0, 1)
    for n in args.nprocs:
        if not args.batch_is_global and args.global_batch % n:
            p.error(f"--global-batch {args.global_batch} is not divisible by {n} processes")
    root = Path(tempfile.mkdtemp(prefix="medkit-ddp-bench-"))
    before = load()
    runs = []
    for rep in range(args.reps):
        for n in args.nprocs:
            for steps in args.step_counts:
                r = medkit_run(args, n, steps, root / f"r{rep}-n{n}-s{steps}")
                runs.append(r | {"rep": rep})
                status = r.get("error") or f"{r['wall_s']:.1f} s"
                print(f"rep {rep} procs {n} steps {steps}: {status}", flush=True)
    after = load()
    rows = summarise(runs, args)
    print()
    print(table(rows, args))
    print(f"\nload before {before}, after {after}")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"run directories under {root}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in vars(args).items()}
    out.write_text(json.dumps({"config": cfg, "host": {"python": platform.python_version(),
                                                       "machine": platform.machine(), "cpus": os.cpu_count()},
                               "load_before": before, "load_after": after, "runs": runs, "results": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
