"""Benchmark: one base-preset MAE training step (forward + backward + AdamW) against the matmul ceiling.

The model is built the way a run builds it (:func:`medkit.config.compose.compose` then
:func:`medkit.models.build.build_model`, base preset, the modality's default tokenizer and the ``mae``
objective): ``2d`` is the X-ray step (3×224², 196 tokens) and ``3d`` the CT step (1×16×192², 144
tokens), batch 8, mask ratio 0.75. Each case runs in its own subprocess so its peak resident set is
its own (Linux ``VmHWM``; on CUDA also ``torch.cuda.max_memory_allocated``). The step's FLOPs are
counted once with :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and
attention, forward and backward; the optimizer's element-wise work is not counted). Inside a worker
every repetition first measures the matmul ceiling (square ``mm`` of ``--ceiling-n`` back to back for
``--ceiling-seconds``, same threads, same dtype as the step) and then times one step, so ceiling and step see the same
machine load; the table gives medians over repetitions.

    python bench/mae_step.py --threads 1 --reps 5                       # fp32, eager, both cases
    python bench/mae_step.py --cases 2d --amp --reps 3                  # bf16 autocast
    python bench/mae_step.py --cases 2d --compile --reps 3              # torch.compile of the loss
    python bench/mae_step.py --device cuda --amp --batch 128 --reps 10  # see bench/gpu.sh
    python bench/mae_step.py --cases 2d --mmap-threshold 1048576        # RSS with a fixed glibc threshold

Writes JSON (default ``bench/results/mae_step.json``) with every repetition, the host, and the
``uptime`` load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, peak_rss_mb, status_mb  # noqa: E402

#: case -> (modality, per-sample input shape)
CASES: dict[str, tuple[str, tuple[int, ...]]] = {"2d": ("xray", (3, 224, 224)), "3d": ("ct", (1, 16, 192, 192))}
OPTIMS = ("auto", "fused", "foreach", "loop")


# -- process measurements ------------------------------------------------------------------






def host_info() -> dict[str, Any]:
    """Python, machine and CPU model, for the JSON."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "machine": platform.machine(), "cpu": cpu,
            "cpus": os.cpu_count()}


# -- the pieces a worker times -------------------------------------------------------------
def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(n: int, dtype: Any, device: Any, seconds: float = 1.0) -> float:
    """GFLOP/s of back-to-back square ``[n, n] @ [n, n]`` products (``2n³`` FLOPs each) sustained for
    at least ``seconds`` (a sustained rate, not a best burst: on a shared machine a burst of a few ms
    can dodge the contention a multi-second step cannot)."""
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm
    sync(device)
    calls, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=out)
        calls += 1
        if calls % 4 == 0:
            sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return 2.0 * n ** 3 * calls / elapsed / 1e9


def make_optimizer(params: list[Any], kind: str, device: Any) -> tuple[Any, str]:
    """AdamW (MedCoSS's betas and weight decay) as ``kind``; ``auto`` = fused where the installed
    torch supports it on ``device``, else foreach."""
    import torch

    kw = {"lr": 1.5e-4, "betas": (0.9, 0.95), "weight_decay": 0.05}
    if kind in ("auto", "fused"):
        try:
            return torch.optim.AdamW(params, fused=True, **kw), "fused"
        except (RuntimeError, TypeError, ValueError):
            if kind == "fused":
                raise
    if kind in ("auto", "foreach"):
        return torch.optim.AdamW(params, foreach=True, **kw), "foreach"
    return torch.optim.AdamW(params, foreach=False, **kw), "loop"


def build(case: str, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(encoder, mae head, batch)`` for ``case``, through medkit's own config and model building."""
    import torch

    from medkit.api.batch import collate
    from medkit.config.compose import Selection, compose
    from medkit.models.build import build_model
    from medkit.registry import get_host

    modality, shape = CASES[case]
    host = get_host()
    cfg = compose(Selection(modalities=[modality], strategy="sequential", preset=args.preset,
                            overrides=[f"objective.mae.mask_ratio={args.mask_ratio}"]), host=host)
    model = build_model(cfg, create=host.create)
    encoder, head = model.encoder, model.heads[modality]
    tok = encoder.tokenizers[model.tokenizer_of[modality]]
    g = torch.Generator().manual_seed(0)
    samples = [{"input": torch.rand(shape, generator=g), "id": f"s{i}"} for i in range(args.batch)]
    batch = collate(samples, modality, tok)
    return encoder, head, batch


def set_mmap_threshold(nbytes: int) -> bool:
    """glibc ``mallopt(M_MMAP_THRESHOLD, nbytes)``: allocations of at least ``nbytes`` get their own
    mapping, returned to the system when freed (the default threshold grows up to 32 MiB as large
    blocks are freed, after which freed activations and gradients stay in the heap and count in RSS)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(nbytes)))  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


def worker(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build ``case``, count its FLOPs, then ``reps`` × (ceiling, timed step)."""
    mmap_set = set_mmap_threshold(args.mmap_threshold) if args.mmap_threshold else False
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    rss_torch = status_mb("VmRSS")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    encoder, head, batch = build(case, args)
    modules = torch.nn.ModuleDict({"encoder": encoder, "head": head}).to(device).train()
    batch.inputs = batch.inputs.to(device)
    opt, optim_kind = make_optimizer([p for p in modules.parameters() if p.requires_grad], args.optim, device)
    rss_built = status_mb("VmRSS")
    amp_dtype = torch.bfloat16 if args.amp else None
    gen = torch.Generator(device=device).manual_seed(0)

    def loss_fn() -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            return head(encoder, batch, generator=gen).loss

    forward = torch.compile(loss_fn) if args.compile else loss_fn

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        opt.step()
        sync(device)
        return float(loss.detach())

    t0 = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        step()
    first_s = time.perf_counter() - t0
    flops = counter.get_total_flops()
    for _ in range(args.warmup):
        step()
    reps = []
    for _ in range(args.reps):
        ceiling = matmul_ceiling(args.ceiling_n, amp_dtype or torch.float32, device, args.ceiling_seconds)
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        reps.append({"step_s": dt, "gflops": flops / dt / 1e9, "ceiling_gflops": ceiling,
                     "pct_of_ceiling": 100.0 * flops / dt / 1e9 / ceiling, "loss": loss})
    out = {"case": case, "modality": CASES[case][0], "device": str(device), "threads": args.threads,
           "batch": args.batch, "amp": bool(args.amp), "compile": bool(args.compile), "optim": optim_kind,
           "params": sum(p.numel() for p in modules.parameters()), "gflop_per_step": flops / 1e9,
           "first_step_s": first_s, "reps": reps, "mmap_threshold": args.mmap_threshold if mmap_set else None,
           "rss_after_import_mb": rss_torch, "rss_after_build_mb": rss_built, "peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repetitions of a worker's result."""
    med = {k: statistics.median(x[k] for x in r["reps"]) for k in ("step_s", "gflops", "ceiling_gflops",
                                                                   "pct_of_ceiling")}
    return med | {"samples_per_s": r["batch"] / med["step_s"], "min_step_s": min(x["step_s"] for x in r["reps"])}


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'case':<5}{'device':>7}{'thr':>4}{'dtype':>7}{'mode':>8}{'optim':>8}{'mmap thr':>9}{'GFLOP':>8}{'s/step':>9}"
            f"{'min s':>8}{'GFLOP/s':>9}{'ceiling':>9}{'% ceil':>8}{'samp/s':>8}{'peak RSS MiB':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:<5} failed: {r['error']}")
            continue
        s = summarise(r)
        lines.append(f"{r['case']:<5}{r['device']:>7}{r['threads']:>4}{'bf16' if r['amp'] else 'fp32':>7}"
                     f"{'compile' if r['compile'] else 'eager':>8}{r['optim']:>8}"
                     f"{str(r.get('mmap_threshold') or 'glibc'):>9}{r['gflop_per_step']:>8.0f}"
                     f"{s['step_s']:>9.3f}{s['min_step_s']:>8.3f}{s['gflops']:>9.1f}{s['ceiling_gflops']:>9.1f}"
                     f"{s['pct_of_ceiling']:>8.1f}{s['samples_per_s']:>8.2f}{r['peak_rss_mb']:>13.0f}")
    return "\n".join(lines)


def run_case(case: str, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    if args.device == "cpu":
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(args.threads)
    out = subprocess.run([sys.executable, __file__, *argv, "--worker", case], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode != 0:
        return {"case": case, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="2d,3d", help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--preset", default="base", help="encoder preset (tiny/small/base)")
    p.add_argument("--batch", type=int, default=8, help="samples per step")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="MAE mask ratio")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (ceiling measured in bf16 too)")
    p.add_argument("--compile", action="store_true", help="torch.compile the loss computation")
    p.add_argument("--optim", choices=OPTIMS, default="auto", help="AdamW implementation (auto: fused if supported)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (each after a ceiling measurement)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the FLOP-counting one")
    p.add_argument("--ceiling-n", type=int, default=2048, help="square matmul size for the ceiling")
    p.add_argument("--ceiling-seconds", type=float, default=1.0, help="how long each ceiling measurement runs")
    p.add_argument("--mmap-threshold", type=int, default=0,
                   help="glibc M_MMAP_THRESHOLD in bytes for the worker (e.g. 1048576; default: glibc's own)")
    p.add_argument("--out", default="bench/results/mae_step.json", help="JSON results file")
    p.add_argument("--worker", choices=tuple(CASES), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            parser().error(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    before = load()
    rows = []
    for case in cases:
        rows.append(run_case(case, args, argv))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    after = load()
    print()
    print(table(rows))
    print(f"\nload before {before}, after {after}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = [r | {"median": summarise(r)} if "error" not in r else r for r in rows]
    out.write_text(json.dumps({"config": vars(args) | {"worker": None}, "host": host_info(),
                               "load_before": before, "load_after": after, "results": summary}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
