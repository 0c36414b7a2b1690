"""Samples/s per GPU fed from prepared data by N DataLoader workers: the bf16 MAE step, MFU and GPU busy time.

Without ``--prepared``, generates ``--n`` X-ray PNGs (16-bit, ``--size``², seeded, as ``bench/loader.py``)
and prepares them with ``medkit.data.prepare`` (``--prepare-workers`` processes). Then trains the
base-preset MAE on them through the engine's own loader (``RunLoader`` over the step plan, pinned
memory, ``--workers`` persistent workers; ``auto`` as ``trainer.num_workers=auto``) in bf16 on one
GPU, and reports: samples/s, the GPU's busy share (time between CUDA events around each step's
compute, over the wall time), the share of the wall time spent waiting for the next batch, the
loader alone (no model), and TFLOP/s against the bf16 matmul ceiling measured in the same process.

    python bench/loader_gpu.py --workers 8 --batch 128 --steps 50
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load


def prepared_xray(args: argparse.Namespace) -> Path:
    """``--prepared``, or X-ray PNGs generated and prepared under ``--workdir`` (once)."""
    if args.prepared:
        return Path(args.prepared)
    from loader import write_xray

    from medkit.data.prepare import prepare
    from medkit.registry import create

    root = Path(args.workdir) / f"xray{args.size}x{args.n}"
    out = root / "prepared"
    if not (out / "manifest.json").is_file():
        if not (root / "png").is_dir() or len(list((root / "png").glob("*.png"))) < args.n:
            write_xray(root, args.n, args.size)
        prepare(create("modality", "xray", frontal_only=False), root / "png", out, workers=args.prepare_workers)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepared", default="", help="a prepared xray folder (default: generate and prepare one)")
    p.add_argument("--n", type=int, default=512, help="generated images")
    p.add_argument("--size", type=int, default=2048, help="generated image edge")
    p.add_argument("--prepare-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--workdir", default="/tmp/medkit-bench-loader-gpu")
    p.add_argument("--workers", default="auto", help="DataLoader workers (or auto)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5, help="steps before timing (at least 1: it counts the FLOPs)")
    p.add_argument("--preset", default="base")
    p.add_argument("--ceiling-n", type=int, default=8192, help="matrix edge of the bf16 matmul ceiling")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="bench/results/loader_gpu.json")
    args = p.parse_args(argv)
    import torch

    from mae_step import matmul_ceiling, sync
    from medkit.api.batch import Source
    from medkit.config.compose import Selection, compose
    from medkit.data.prepared_dataset import open_prepared
    from medkit.engine.loader import RunLoader
    from medkit.engine.plan import StepPlan
    from medkit.engine.schedule import adamw, param_groups
    from medkit.engine.workers import resolve_num_workers
    from medkit.models.build import build_model
    from medkit.models.precision import autocast
    from medkit.registry import create, get_host

    before = load()
    device = torch.device(args.device)
    workers, why = resolve_num_workers(int(args.workers) if args.workers.isdigit() else args.workers)
    data = prepared_xray(args)
    host = get_host()
    cfg = compose(Selection(modalities=["xray"], strategy="sequential", preset=args.preset), host=host)
    model = build_model(cfg, create=host.create)
    encoder, head = model.encoder, model.heads["xray"]
    modules = torch.nn.ModuleDict({"encoder": encoder, "head": head}).to(device).train()
    opt = adamw(param_groups([(n, q) for n, q in modules.named_parameters() if q.requires_grad], 0.05),
                lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, device=device)
    ds = open_prepared(create("modality", "xray", frontal_only=False), data, train=True)
    tok = {"xray": encoder.tokenizers[model.tokenizer_of["xray"]]}
    args.warmup = max(1, args.warmup)
    total = args.warmup + args.steps
    plan = StepPlan([Source("xray", list(range(len(ds))))], batch_size=args.batch, max_steps=total, seed=0, stage=0)
    gen = torch.Generator(device=device).manual_seed(0)

    def step(batch: Any) -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, torch.bfloat16):
            loss = head(encoder, batch, generator=gen).loss
        loss.float().backward()
        opt.step()

    loader = RunLoader({"xray": ds}, tok, num_workers=workers, pin_memory=device.type == "cuda")
    it = loader.stage(plan)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(next(it).to(device))  # the first step (allocator, lazy optimizer state) counts the FLOPs
    flops = counter.get_total_flops()
    for _ in range(args.warmup - 1):
        step(next(it).to(device))
    sync(device)
    cuda = device.type == "cuda"
    events: list[Any] = []
    wait = cpu_busy = 0.0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        w0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - w0
        batch = batch.to(device)
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(batch)
            end.record()
            events.append((start, end))
        else:
            s0 = time.perf_counter()
            step(batch)
            cpu_busy += time.perf_counter() - s0
    sync(device)
    wall = time.perf_counter() - t0
    busy = sum(s.elapsed_time(e) for s, e in events) / 1e3 if cuda else cpu_busy
    loader.close()
    only = RunLoader({"xray": ds}, tok, num_workers=workers, pin_memory=False)
    l0 = time.perf_counter()
    got = sum(len(b) for b in only.stage(plan))
    loader_rate = got / (time.perf_counter() - l0)
    only.close()
    ceiling = matmul_ceiling(args.ceiling_n, torch.bfloat16, device, 1.0)
    samples_s = args.steps * args.batch / wall
    step_tflops = flops * args.steps / busy / 1e12 if busy > 0 else math.nan
    res = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "workers": workers,
           "workers_why": why, "batch": args.batch, "steps": args.steps, "samples_per_s_per_gpu": samples_s,
           "gpu_busy_share": busy / wall, "data_wait_share": wait / wall, "loader_only_samples_per_s": loader_rate,
           "gflop_per_step": flops / 1e9, "tflops_while_busy": step_tflops,
           "tflops_overall": flops * args.steps / wall / 1e12,
           "bf16_matmul_ceiling_tflops": ceiling / 1e3, "mfu_vs_ceiling": flops * args.steps / wall / 1e9 / ceiling,
           "prepared": str(data), "load_before": before, "load_after": load()}
    print(f"loader on {res['gpu']}: {workers} workers ({why})")
    print(f"  samples/s per GPU {samples_s:.0f} | GPU busy {100 * res['gpu_busy_share']:.0f}% | waiting for data "
          f"{100 * res['data_wait_share']:.0f}% | loader alone {loader_rate:.0f} samples/s | "
          f"{res['tflops_overall']:.1f} TFLOP/s = {100 * res['mfu_vs_ceiling']:.0f}% of the bf16 matmul ceiling")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "result": res}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
