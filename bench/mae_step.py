"""Benchmark: one base-preset MAE training step (forward + backward + AdamW) in fp32, bf16 and bf16 +
compile, each against its own matmul ceiling and against the reference's fp32 step.

The model is built the way a run builds it (:func:`medkit.config.compose.compose` then
:func:`medkit.models.build.build_model`, base preset, the modality's default tokenizer and the ``mae``
objective): ``2d`` is the X-ray step (3×224², 196 tokens) and ``3d`` the CT step (1×16×192², 144
tokens), batch 8, mask ratio 0.75. A mode is what a run's config selects: ``fp32``; ``bf16``
(``trainer.amp=bf16``: bf16 autocast on the device, fp32 weights, loss and optimizer); ``+compile``
(``trainer.compile=true``: the encoder's blocks through ``torch.compile`` with inductor, regionally,
as :func:`medkit.models.build.set_trunk_options` sets it). The optimizer is the engine's AdamW
(:func:`medkit.engine.schedule.adamw`, fused where torch has it) unless ``--optim`` says otherwise.

Each case × mode runs in its own subprocess, so its peak resident set is its own (Linux ``VmHWM``;
on CUDA also ``torch.cuda.max_memory_allocated``). The step's FLOPs are counted once with
:class:`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and attention, forward and
backward; the optimizer's element-wise work is not counted). Inside a worker every repetition first
measures the matmul ceiling in the mode's matmul dtype (square ``mm`` of ``--ceiling-n`` back to back
for ``--ceiling-seconds``, same threads: fp32 for ``fp32``, bf16 for ``bf16``), then times one step,
so ceiling and step see the same machine load; the table gives medians over repetitions, and
``first s`` is the first step (with compilation, for a compiled mode).

The reference is the official MedCoSS ``Unified_Model``'s fp32 step. It is no dependency of medkit:
with ``--reference-repo PATH`` (a checkout of the authors' code, ``git clone
https://github.com/yeerwen/MedCoSS``) the fp32 worker imports their model from that folder
(:mod:`medcoss_reference`, which documents the step and the few shims their code needs under today's
torch), builds it as their pre-training script does and times its step (forward, backward, their
gradient scaler and torch's default AdamW) on the same batch, in the same process and thread count,
alternating with medkit's step rep by rep (each rep: the ceiling, then both steps, the first of them
swapped every rep); both steps' FLOPs are counted, and the comparison is called like for like where
they agree within 5 %. A folder that is not their code is refused in one line. Besides wall time each
step's CPU time (``time.process_time``) is kept, and ``x cpu`` is the speed-up by it: on a machine
shared with other jobs a one-thread step's CPU time moves far less than its wall time. Without a
checkout the bench compares with a recorded figure (one core, batch 8, base: 2D 3.11 s, 3D 2.59 s,
measured on another machine) and says so; ``--reference-s 2d=S,3d=S`` gives figures measured
elsewhere. With a checkout, the fp32 row's peak RSS holds both models.

Measured here (a two-core Xeon at 2.8 GHz without AMX, shared with other jobs: load 2.6–3.0), medians
of 5 interleaved reps, one thread, batch 8 (every medkit rep was faster than every reference rep):

    python bench/mae_step.py --cases 2d,3d --modes fp32 --reps 5 --reference-repo ../MedCoSS

    case  medkit s wall (CPU)  reference s wall (CPU)  x ref (wall)  x cpu  GFLOP medkit / reference
    2d    4.15 (4.06)          4.84 (4.71)             1.17          1.16   450 / 450
    3d    3.27 (3.20)          3.94 (3.83)             1.20          1.20   356 / 356

    python bench/mae_step.py --threads 1 --reps 5                       # fp32, bf16, bf16+compile, both cases
    python bench/mae_step.py --cases 2d --modes bf16 --reps 3           # one mode
    python bench/mae_step.py --device cuda --amp --batch 128 --reps 10  # bf16 on CUDA (see bench/gpu.sh)
    python bench/mae_step.py --cases 2d --mmap-threshold 1048576        # RSS with a fixed glibc threshold
    python bench/mae_step.py --modes fp32 --reference-repo ../MedCoSS   # the authors' step, same run

``--amp`` / ``--compile`` are shorthands for one mode (``bf16``, ``bf16+compile``, ``fp32+compile``).
Writes JSON (default ``bench/results/mae_step.json``) with every repetition, the host, and the
``uptime`` load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, peak_rss_mb, status_mb
from medcoss_reference import REFERENCE_NOTE, describe_measured, reference_for

#: case -> (modality, per-sample input shape)
CASES: dict[str, tuple[str, tuple[int, ...]]] = {"2d": ("xray", (3, 224, 224)), "3d": ("ct", (1, 16, 192, 192))}
OPTIMS = ("auto", "fused", "foreach", "loop")
MODES = ("fp32", "bf16", "fp32+compile", "bf16+compile")


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


def make_optimizer(named: list[tuple[str, Any]], kind: str, device: Any) -> tuple[Any, str]:
    """AdamW (MedCoSS's betas and weight decay, timm's decay groups) as ``kind``: ``auto`` is the
    engine's (:func:`medkit.engine.schedule.adamw`: fused where torch has it, else foreach)."""
    import torch

    from medkit.engine.schedule import adamw, param_groups

    groups = param_groups(named, 0.05)
    if kind in ("auto", "fused", "foreach"):
        opt = adamw(groups, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, device=device, impl=kind)
        return opt, "fused" if opt.defaults.get("fused") else "foreach"
    return torch.optim.AdamW(groups, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, foreach=False), "loop"


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


def worker(case: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build ``case`` in ``mode``, count its FLOPs, then ``reps`` × (ceiling, timed step)."""
    mmap_set = set_mmap_threshold(args.mmap_threshold) if args.mmap_threshold else False
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medkit.config.schemas import TrainerConfig
    from medkit.models.build import set_trunk_options
    from medkit.models.precision import amp_dtype, autocast

    rss_torch = status_mb("VmRSS")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    bf16, compiled = mode.startswith("bf16"), mode.endswith("+compile")
    encoder, head, batch = build(case, args)
    modules = torch.nn.ModuleDict({"encoder": encoder, "head": head}).to(device).train()
    set_trunk_options(encoder, TrainerConfig(compile=args.compile_backend if compiled else False))
    batch.inputs = batch.inputs.to(device)
    opt, optim_kind = make_optimizer([(n, p) for n, p in modules.named_parameters() if p.requires_grad],
                                     args.optim, device)
    rss_built = status_mb("VmRSS")
    dtype = amp_dtype(bf16)  # trainer.amp: None (fp32) or bf16
    gen = torch.Generator(device=device).manual_seed(0)
    ref_step = ref_facts = None
    if args.reference_repo and mode == "fp32":  # the authors' step on the same inputs, interleaved below
        from medcoss_reference import build_reference_step

        torch.manual_seed(0)
        ref_step, _, ref_facts = build_reference_step(args.reference_repo, case, batch.inputs, args.mask_ratio)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = head(encoder, batch, generator=gen).loss
        loss.float().backward()
        opt.step()
        sync(device)
        return float(loss.detach())

    t0 = time.perf_counter()
    step()  # the first step: compilation, lazy optimizer state, allocator warm-up
    first_s = time.perf_counter() - t0
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    ref_flops = 0
    if ref_step is not None:
        ref_step()  # its first step: lazy optimizer state
        with FlopCounterMode(display=False) as counter:
            ref_step()
        ref_flops = counter.get_total_flops()
    for _ in range(args.warmup):
        step()
        if ref_step is not None:
            ref_step()
    reps, ref_reps = [], []
    for i in range(args.reps):
        ceiling = matmul_ceiling(args.ceiling_n, dtype or torch.float32, device, args.ceiling_seconds)
        # medkit and the reference alternate which goes first, so neither always follows the ceiling
        order = (step, ref_step) if i % 2 == 0 else (ref_step, step)
        for fn in order:
            if fn is None:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            loss = fn()
            sync(device)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            n = flops if fn is step else ref_flops
            (reps if fn is step else ref_reps).append(
                {"step_s": dt, "cpu_s": cpu, "gflops": n / dt / 1e9, "ceiling_gflops": ceiling,
                 "pct_of_ceiling": 100.0 * n / dt / 1e9 / ceiling, "loss": loss, "first": fn is order[0]})
    out = {"case": case, "mode": mode, "modality": CASES[case][0], "device": str(device), "threads": args.threads,
           "batch": args.batch, "preset": args.preset, "amp": bf16, "compile": compiled, "optim": optim_kind,
           "compile_backend": args.compile_backend if compiled else None,
           "ceiling_dtype": "bf16" if bf16 else "fp32",
           "params": sum(p.numel() for p in modules.parameters()), "gflop_per_step": flops / 1e9,
           "first_step_s": first_s, "reps": reps, "mmap_threshold": args.mmap_threshold if mmap_set else None,
           "rss_after_import_mb": rss_torch, "rss_after_build_mb": rss_built, "peak_rss_mb": peak_rss_mb()}
    if ref_step is not None:
        out["reference_measured"] = (ref_facts or {}) | {"gflop_per_step": ref_flops / 1e9, "reps": ref_reps}
    if device.type == "cuda":
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repetitions of a worker's result, and the speed-up over the reference if any:
    by wall time, and by the process's CPU time where the reference was measured in this run (on a
    machine shared with other jobs, the CPU time of a one-thread step is the steadier measure)."""
    med = {k: statistics.median(x[k] for x in r["reps"]) for k in ("step_s", "cpu_s", "gflops", "ceiling_gflops",
                                                                   "pct_of_ceiling")}
    ref = r.get("reference")
    return med | {"samples_per_s": r["batch"] / med["step_s"], "min_step_s": min(x["step_s"] for x in r["reps"]),
                  "speedup_vs_reference": ref["step_s"] / med["step_s"] if ref else None,
                  "cpu_speedup_vs_reference": ref["cpu_s"] / med["cpu_s"] if ref and "cpu_s" in ref else None}


COLUMNS = (("case", "<5"), ("mode", "<13"), ("device", ">7"), ("thr", ">4"), ("optim", ">8"), ("GFLOP", ">7"),
           ("s/step", ">8"), ("cpu s", ">8"), ("min s", ">8"), ("first s", ">8"), ("GFLOP/s", ">8"), ("ceiling", ">8"),
           ("ceil", ">5"), ("% ceil", ">7"), ("samp/s", ">7"), ("ref s", ">6"), ("x ref", ">6"), ("x cpu", ">6"),
           ("RSS MiB", ">8"))


def table(rows: list[dict[str, Any]]) -> str:
    """One line per case × mode; ``ceil`` is the ceiling's dtype, ``ref s`` the reference's fp32 step, ``x ref``
    its speed-up by wall time and ``x cpu`` by CPU time (only where it was measured in this run)."""
    head = "".join(f"{name:{fmt}}" for name, fmt in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:<5}{r.get('mode', ''):<13} failed: {r['error']}")
            continue
        s, ref = summarise(r), r.get("reference")
        cells = [r["case"], r["mode"], r["device"], r["threads"], r["optim"], f"{r['gflop_per_step']:.0f}",
                 f"{s['step_s']:.3f}", f"{s['cpu_s']:.3f}", f"{s['min_step_s']:.3f}", f"{r['first_step_s']:.2f}",
                 f"{s['gflops']:.1f}", f"{s['ceiling_gflops']:.1f}", r["ceiling_dtype"], f"{s['pct_of_ceiling']:.1f}",
                 f"{s['samples_per_s']:.2f}", f"{ref['step_s']:.2f}" if ref else "n/a",
                 f"{s['speedup_vs_reference']:.2f}" if ref else "n/a",
                 f"{s['cpu_speedup_vs_reference']:.2f}" if s["cpu_speedup_vs_reference"] else "n/a",
                 f"{r['peak_rss_mb']:.0f}"]
        lines.append("".join(f"{str(c):{fmt}}" for c, (_, fmt) in zip(cells, COLUMNS)))
    return "\n".join(lines)


def run_case(case: str, mode: str, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    if args.device == "cpu":
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(args.threads)
    out = subprocess.run([sys.executable, __file__, *argv, "--worker", case, "--worker-mode", mode],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return {"case": case, "mode": mode, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="2d,3d", help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--preset", default="base", help="encoder preset (tiny/small/base)")
    p.add_argument("--batch", type=int, default=8, help="samples per step")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="MAE mask ratio")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--modes", default="fp32,bf16,bf16+compile", help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--amp", action="store_true", help="only bf16 (with --compile: only bf16+compile)")
    p.add_argument("--compile", action="store_true",
                   help="only the compiled mode (fp32+compile, or bf16+compile with --amp)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the +compile modes (aot_eager: no C++ compiler, for checking)")
    p.add_argument("--optim", choices=OPTIMS, default="auto",
                   help="AdamW implementation (auto: the engine's, fused where torch has it)")
    p.add_argument("--reference-repo", default="",
                   help="a checkout of the authors' code (git clone https://github.com/yeerwen/MedCoSS): time "
                        "their fp32 step interleaved with medkit's, in the fp32 worker")
    p.add_argument("--reference-s", default="",
                   help="the reference's fp32 step in s per case, measured elsewhere (e.g. 2d=3.11,3d=2.59)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (each after a ceiling measurement)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the FLOP-counting one")
    p.add_argument("--ceiling-n", type=int, default=2048, help="square matmul size for the ceiling")
    p.add_argument("--ceiling-seconds", type=float, default=1.0, help="how long each ceiling measurement runs")
    p.add_argument("--mmap-threshold", type=int, default=0,
                   help="glibc M_MMAP_THRESHOLD in bytes for the worker (e.g. 1048576; default: glibc's own)")
    p.add_argument("--out", default="bench/results/mae_step.json", help="JSON results file")
    p.add_argument("--worker", choices=tuple(CASES), help=argparse.SUPPRESS)
    p.add_argument("--worker-mode", choices=MODES, default="fp32", help=argparse.SUPPRESS)
    return p


def chosen_modes(args: argparse.Namespace) -> list[str]:
    """``--modes``, or the one mode ``--amp`` / ``--compile`` name."""
    if args.amp or args.compile:
        return [("bf16" if args.amp else "fp32") + ("+compile" if args.compile else "")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            parser().error(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    return modes


def given_references(text: str) -> dict[str, float]:
    """``--reference-s 2d=3.11,3d=2.59`` as ``{case: seconds}``."""
    out = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        case, _, value = item.partition("=")
        if case not in CASES or not value:
            parser().error(f"--reference-s {item!r}: give CASE=SECONDS with CASE one of {', '.join(CASES)}")
        out[case] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.worker_mode, args)))
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            parser().error(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    modes, given = chosen_modes(args), given_references(args.reference_s)
    if args.reference_repo:
        from medcoss_reference import ReferenceRepoError, check_repo

        if args.preset != "base" or "fp32" not in modes:
            parser().error("--reference-repo times the authors' ViT-B step beside medkit's fp32 step: "
                           "use it with --preset base and the fp32 mode")
        try:
            check_repo(args.reference_repo)
        except ReferenceRepoError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    before = load()
    rows: list[dict[str, Any]] = []
    measured: dict[str, dict[str, Any]] = {}  # case -> the reference's step timed by that case's fp32 worker
    for case in cases:
        for mode in modes:
            row = run_case(case, mode, args, argv)
            if "reference_measured" in row:
                measured[case] = row["reference_measured"]
            rows.append(row)
            for r in rows:  # a row run before its case's fp32 row gets the measured reference now
                if "error" not in r:
                    r["reference"] = reference_for(r, given, measured)
            print(table([row]).splitlines()[-1], flush=True)
    after = load()
    print()
    print(table(rows))
    compared = [r["reference"]["source"] for r in rows if r.get("reference")]
    if measured:
        for line in describe_measured(rows, measured):
            print(f"\n{line}")
    elif "recorded" in compared:
        print(f"\nreference: {REFERENCE_NOTE}")
    elif not compared:
        print("\nreference: none for these settings (the recorded figures are for base, batch 8, one thread, "
              "CPU; give --reference-repo or --reference-s to compare)")
    print(f"load before {before}, after {after}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = [r | {"median": summarise(r)} if "error" not in r else r for r in rows]
    out.write_text(json.dumps({"config": vars(args) | {"worker": None}, "host": host_info(), "modes": modes,
                               "reference_note": ("measured in this run (--reference-repo)" if measured
                                                  else REFERENCE_NOTE), "load_before": before, "load_after": after,
                               "results": summary}, indent=2, allow_nan=False) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
