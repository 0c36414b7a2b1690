"""Benchmark: prepared (litdata) samples read in order, in a random permutation, and in chunk-aware order.

Writes ``--n`` seeded random ``--side``² uint8 samples into a prepared part with litdata's
``BinaryWriter`` (``--chunk-bytes`` per chunk), then reads them through medkit's own reader
(:class:`medkit.data.prepared.PartReader`, what training from prepared data calls) in three orders:

    in-order      indices 0, 1, 2, …
    random        the step plan's permutation of a source without declared chunks (the folder path's)
    chunk-aware   the step plan's permutation when the dataset declares its chunks (windows of
                  ``--window`` chunks; :mod:`medkit.engine.chunk_plan`)

Each order is read in a fresh reader (a process's first pass) for at most ``--seconds``; the table
gives samples/s, one thread.

    python bench/prepared_order.py --n 2048 --side 256 --chunk-bytes 8MB --seconds 10
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load


def write(root: Path, n: int, side: int, chunk_bytes: str) -> list[dict[str, Any]]:
    """One prepared part of ``n`` seeded samples under ``root`` (what ``medkit prepare`` writes per part)."""
    import numpy as np
    from litdata.streaming.writer import BinaryWriter

    part = root / "parts" / "part-00000"
    part.mkdir(parents=True)
    rng = np.random.default_rng(0)
    writer = BinaryWriter(str(part), chunk_bytes=chunk_bytes)
    for i in range(n):
        writer[i] = {"x": rng.integers(0, 256, (side, side), dtype=np.uint8),
                     "box": np.asarray([0.0, 0.0, side, side], dtype=np.float64)}
    writer.done()
    writer.merge()
    return [{"dir": "parts/part-00000", "count": n}]


def order(kind: str, n: int, chunk_sizes: list[int], window: int) -> list[int]:
    """The indices ``kind`` reads, one epoch."""
    from medkit.api.batch import Source
    from medkit.engine.plan import StepPlan

    if kind == "in-order":
        return list(range(n))
    chunks = {"x": chunk_sizes} if kind == "chunk-aware" else None
    plan = StepPlan([Source("x", list(range(n)))], batch_size=n, max_steps=1, seed=0, stage=0,
                    chunk_sizes=chunks, chunk_window=window)
    return plan.step(0)[1]


def measure(root: Path, parts: list[dict[str, Any]], indices: list[int], seconds: float) -> dict[str, float]:
    from medkit.data.prepared import PartReader

    reader = PartReader(root, parts)
    t0 = time.perf_counter()
    done = 0
    for i in indices:
        reader.read(i)
        done += 1
        if time.perf_counter() - t0 > seconds:
            break
    wall = time.perf_counter() - t0
    return {"samples": done, "wall_s": round(wall, 3), "samples_per_s": round(done / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--chunk-bytes", default="8MB", help="litdata chunk size (medkit prepare writes 64MB)")
    ap.add_argument("--window", type=int, default=4, help="chunks per window of the chunk-aware order")
    ap.add_argument("--seconds", type=float, default=10.0, help="time cap per order")
    ap.add_argument("--orders", default="in-order,random,chunk-aware")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "prepared_order.json")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    before = load()
    root = Path(tempfile.mkdtemp(prefix="medkit-prepared-order-"))
    try:
        t0 = time.perf_counter()
        parts = write(root, args.n, args.side, args.chunk_bytes)
        written = time.perf_counter() - t0
        from medkit.data.prepared import PartReader

        sizes = PartReader(root, parts).chunk_sizes
        rows = {}
        for kind in args.orders.split(","):
            rows[kind] = measure(root, parts, order(kind, args.n, sizes, args.window), args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.n} samples of {args.side}² uint8 in {len(sizes)} chunks of ~{sizes[0]} ({args.chunk_bytes}); "
          f"written in {written:.1f} s; window {args.window} chunks; one thread")
    print(f"{'order':<12} {'samples':>8} {'wall s':>8} {'samples/s':>10}")
    for kind, r in rows.items():
        print(f"{kind:<12} {r['samples']:>8} {r['wall_s']:>8.2f} {r['samples_per_s']:>10.1f}")
    after = load()
    print(f"load before/after: {before} / {after}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "chunks": sizes,
                                    "rows": rows, "load_before": before, "load_after": after,
                                    "machine": platform.machine(), "python": platform.python_version()}, indent=2))


if __name__ == "__main__":
    main()
