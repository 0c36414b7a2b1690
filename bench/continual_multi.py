"""Benchmark: continual SSL over 1D, 2D and 3D files through the real plugins (issue 18, items 2, 3, 5).

Four procedural modalities are written as files (bench/multi_data.py: report text + labels.csv,
X-ray PNGs + metadata.csv + labels.csv, CT and MRI NIfTI + labels.csv; four classes each,
difficulty set on development data only, held-out ≥ 50 sources each) and read by the report,
xray, ct and mri plugins. Stages: ``report → xray → 3D`` (the paper's order; ``ct`` and ``mri``
are one stage each, so a decoder shared per dimension sees two modalities) and its reverse.

Rows (each ``--seeds`` seeds × both orders unless said):

* every strategy at its documented defaults: ``sequential``, ``rehearsal`` (MedCoSS), ``er``,
  ``ewc`` (λ from a sweep on disjoint sources, :mod:`multi_sweep`), ``packnet``, ``cassle``;
* ``joint`` (per-modality decoders, Joint SSL†) and ``joint_shared`` (``strategy.decoders=dimension``,
  Joint SSL*; only where the joint strategy has that option), both ``T × --steps`` steps;
* ``tfs``: the random encoder, probes trained and decoder refitted on it (the random-encoder
  baseline row and the FWT baseline; run once per seed, in the forward order, and used for both);
* ``single_<m>``: single-modality SSL on ``m`` for ``--steps`` steps (the ceiling beside every
  probe accuracy and the plasticity reference), order-independent;
* MedCoSS ablations (first order only): random selection, no mixup, no distillation
  (``buffer_loss=pretext``), buffer ratio 1 % and 10 % (5 % is the default ``rehearsal`` row).

**Size (the defaults), chosen on development sources only** by :mod:`multi_size`'s rule, fixed before
any sizing run and reading only single-modality SSL and the random encoder (never a strategy): the
first budget at which single-modality SSL's refitted-decoder loss is ≤ 0.9 × the random encoder's
and its linear probe ≥ chance + 0.15 on every modality (development sources from 900 000, seed
900); else the largest budget whose full run fits the 45-minute limit. No budget tried passes: at
60, 120 and 240 steps per stage (probes 256 samples / 100 L-BFGS iterations) the report and CT
probes clear chance + 0.15 but the X-ray and MRI probes stay at chance and the refitted-decoder
loss of every image modality stays at 0.99–1.01 of the random encoder's
(``bench/continual_multi_sizing.json``). Timed on this machine under its usual load (load
average 4-5), 60 steps per stage with a 10-step refit was the largest budget of the final grid
whose full run fitted 45 minutes with a 30 % margin (it then took 21 minutes), so the defaults
are: 200 sources per modality (``val_fraction`` 0.35: 60–65 held out), batch 16, 60 steps per
stage at lr 3e-3, probes on up to 256 training samples and 128 queries with 100 L-BFGS
iterations, refit 10 steps. The evaluation keeps decoded samples in memory
(``trainer.eval_cache_mb``) and prepared volumes on disk, which changes no number.

Metrics: held-out refit_loss (fresh decoder on the frozen encoder), linear_acc, knn_acc and the
run's own stale decoder's pretext_loss, after every stage, turned into final, forgetting, BWT, FWT
and plasticity by :mod:`multi_report`, which also tests the paper's findings with seed-paired
95 % t-intervals. ``--jobs`` runs that many runs at once in spawned processes.

    python bench/continual_multi.py --quick --out /tmp/cm    # CI size, < 40 s on one core
    python bench/continual_multi.py --jobs 2                 # full size
    python bench/continual_multi.py --jobs 2 --data-variant v2   # full size on the v2 data (data_v2/, runs_v2/)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import multi_data
import multi_report

from medkit.eval.records import json_safe

MODALITIES = ("report", "xray", "ct", "mri")
ORDERS = {"forward": ("report", "xray", "ct", "mri"), "reverse": ("mri", "ct", "xray", "report")}
STRATEGIES = ("sequential", "rehearsal", "er", "ewc", "packnet", "cassle", "joint", "joint_shared")
ABLATIONS = {"rehearsal_random": ["strategy.selection=random"], "rehearsal_nomixup": ["strategy.mixup=false"],
             "rehearsal_nodistill": ["strategy.buffer_loss=pretext"],
             "rehearsal_ratio1": ["strategy.buffer_ratio=0.01"], "rehearsal_ratio10": ["strategy.buffer_ratio=0.1"]}
QUICK = {"steps": 2, "sources": 12, "val_fraction": 0.34, "batch_size": 4, "probe_train": 16, "probe_query": 32,
         "probe_steps": 2,
         "refit_steps": 2, "seeds": "0,1", "strategies": "sequential", "ablations": "",
         "ewc_grid": ""}
TOKENIZERS = {"report": "text_1d", "xray": "patch_2d", "ct": "patch_3d", "mri": "patch_3d"}


def overrides(args: argparse.Namespace, mods: list[str]) -> list[str]:
    """A run's settings: a tiny encoder and small inputs (sizes chosen for the time budget); the
    ``modality.*`` / ``tokenizer.*`` keys of modalities the run does not train are left out."""
    used = {*mods, *(TOKENIZERS[m] for m in mods), *(("mae",) if set(mods) - {"report"} else ())}
    return [o for o in _overrides(args)
            if o.split(".")[0] not in ("modality", "tokenizer", "objective") or o.split(".")[1] in used]


def _overrides(args: argparse.Namespace) -> list[str]:
    return ["encoder.depth=2", "encoder.embed_dim=64", "encoder.num_heads=4",
            "tokenizer.patch_2d.patch_size=8", "tokenizer.patch_2d.base_size=[32,32]",
            "tokenizer.patch_3d.patch_size=8", "tokenizer.patch_3d.base_size=[8,32,32]",
            "tokenizer.text_1d.max_length=48",
            "modality.xray.input_size=32", "modality.xray.hflip=false", "modality.xray.crop_scale=[0.5,1.0]",
            *[f"modality.{m}.{k}" for m in ("ct", "mri") for k in
              ("input_size=[8,32,32]", "depth=8", "depth_stride=8", "disk_cache=true")],
            "modality.mri.drop_fraction=0.0",
            f"trainer.batch_size={args.batch_size}", f"trainer.val_fraction={args.val_fraction}",
            "trainer.num_workers=0", "trainer.eval_batches=2", "trainer.checkpoint_every=1000000",
            "trainer.log_every=1000000", "trainer.eval_cache_mb=512",
            "trainer.probe_unseen=true", f"trainer.probe_max_train={args.probe_train}",
            f"trainer.probe_max_query={args.probe_query}", f"trainer.probe_linear_steps={args.probe_steps}",
            f"trainer.probe_refit_steps={args.refit_steps}", "objective.mae.norm_pix_loss=false",
            f"optim.lr={args.lr}", *args.override]


def bench_env(out: Path) -> None:
    """Environment every run inherits (spawned workers too): no TensorBoard event files, and the
    prepared-volume disk cache under ``out`` (each CT / MRI volume is resampled once for all runs,
    not once per run; the cache is keyed by the file's hash and the preparation's settings, so a
    cached volume is the tensor preparing it again would give)."""
    os.environ["MEDKIT_TENSORBOARD"] = "0"
    os.environ["MEDKIT_CACHE_DIR"] = str(out.resolve() / "cache")


def variant_dir(out: Path, name: str, variant: str) -> Path:
    """``out / name`` for the default data variant ``v1`` (the documented layout), ``out / name_<variant>``
    otherwise, so that data and runs of two variants never mix."""
    return out / (name if multi_data.check_variant(variant) == "v1" else f"{name}_{variant}")


def write_data(root: Path, sources: int, offset: int = 0, variant: str = "v1") -> dict[str, str]:
    """The four modalities' files (data ``variant``) under ``root`` (once); ``{modality: folder}``."""
    return {m: str(multi_data.write_modality(m, root / m, sources, offset, variant)) for m in MODALITIES}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One pre-training run (in this process); returns its record."""
    from medkit.api.progress import NullReporter
    from medkit.config.compose import Selection, compose
    from medkit.engine.engine import Engine
    from medkit.registry import get_host

    args, run_dir = job["args"], Path(job["run_dir"])
    rec = {k: job[k] for k in ("row", "order", "seed")}
    rec["run_dir"] = str(run_dir)
    if (run_dir / "metrics" / "matrix.csv").exists() and not args.fresh:
        return {**rec, "wall_s": None, "reused": True}
    shutil.rmtree(run_dir, ignore_errors=True)
    mods = list(job["modalities"])
    cfg = compose(Selection(modalities=mods, strategy=job["strategy"], preset="tiny", max_steps=job["steps"],
                            seed=job["seed"], data={m: job["data"][m] for m in mods},
                            overrides=overrides(args, mods) + list(job["extra"])), host=get_host())
    t0 = time.perf_counter()
    Engine(cfg, run_dir, components=get_host(), reporter=NullReporter()).run()
    wall = time.perf_counter() - t0
    print(f"  {job['row']} {job['order']} seed {job['seed']}: {wall:.0f} s", file=sys.stderr, flush=True)
    return {**rec, "wall_s": round(wall, 1)}


def _init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_all(jobs: list[dict[str, Any]], pool: Any) -> list[dict[str, Any]]:
    return [run_one(j) for j in jobs] if pool is None else list(pool.map(run_one, jobs))


def make_pool(args: argparse.Namespace) -> Any:
    """``--jobs`` spawned worker processes (``None`` for one job: runs in this process), each with
    ``cpus // jobs`` torch threads; this process gets the same."""
    import torch

    jobs_n = max(1, int(args.jobs))
    threads = max(1, (os.cpu_count() or 1) // jobs_n)
    torch.set_num_threads(threads)
    if jobs_n == 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(jobs_n, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                               initargs=(threads,))


def joint_shared_available() -> bool:
    """Whether the joint strategy has ``decoders=dimension`` (Joint SSL*) in this install."""
    from medkit.api.errors import MedkitError
    from medkit.config.compose import Selection, compose
    from medkit.registry import get_host

    try:
        compose(Selection(modalities=["xray"], strategy="joint", preset="tiny",
                          overrides=["strategy.decoders=dimension"]), host=get_host())
    except MedkitError:
        return False
    return True


def plan(args: argparse.Namespace, root: Path, data: dict[str, str], lam: float | None) -> list[dict[str, Any]]:
    """Every reported run: strategy rows × orders × seeds, single-modality rows, ablations."""
    seeds = [int(s) for s in args.seeds.split(",") if s]
    strategies = [s for s in args.strategies.split(",") if s]
    jobs: list[dict[str, Any]] = []

    def add(row: str, strategy: str, order: str, seed: int, mods: tuple[str, ...], steps: int,
            extra: list[str]) -> None:
        jobs.append({"row": row, "strategy": strategy, "order": order, "seed": seed, "modalities": mods,
                     "steps": steps, "extra": extra, "data": data, "args": args,
                     "run_dir": str(root / order / f"{row}-s{seed}")})

    for seed in seeds:
        for order, mods in ORDERS.items():
            for row in (["tfs"] if order == "forward" else []) + strategies:
                strategy, extra = row, []
                if row == "joint_shared":
                    strategy, extra = "joint", ["strategy.decoders=dimension"]
                elif row == "ewc":
                    extra = [f"strategy.lam={lam}"]
                steps = args.steps * len(mods) if strategy == "joint" else args.steps
                add(row, strategy, order, seed, mods, steps, extra)
        for m in MODALITIES:
            add(f"single_{m}", "sequential", "single", seed, (m,), args.steps, [])
        for row in [a for a in args.ablations.split(",") if a]:
            add(row, "rehearsal", "forward", seed, ORDERS["forward"], args.steps, list(ABLATIONS[row]))
    return jobs


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unavailable"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="toy size for CI (the defaults of the size options)")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--ablations", default=",".join(ABLATIONS))
    p.add_argument("--no-joint-shared", action="store_true", help="leave out the joint_shared row")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per stage (joint: T × this)")
    p.add_argument("--sources", type=int, default=200, help="sources per modality")
    p.add_argument("--val-fraction", type=float, default=0.35)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--probe-train", type=int, default=256)
    p.add_argument("--probe-query", type=int, default=128)
    p.add_argument("--probe-steps", type=int, default=100)
    p.add_argument("--refit-steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--override", action="append", default=[], help="extra KEY=VALUE for every run")
    p.add_argument("--ewc-grid", default="1e2,1e4,1e6")
    p.add_argument("--sweep-seed", type=int, default=100)
    p.add_argument("--out", default="bench/results/continual_multi")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--fresh", action="store_true", help="rerun runs whose results are already there")
    p.add_argument("--data-variant", default="v1", choices=multi_data.DATA_VARIANTS,
                   help="procedural data variant (bench/multi_data.py): v1 the documented data, v2 class cue dominant;"
                        " a variant other than v1 writes its data and runs under folders named after it")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(**QUICK)  # toy size; options given explicitly still win
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import multi_sweep

    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench_env(out)
    load_before, t0 = uptime(), time.perf_counter()
    data = write_data(variant_dir(out, "data", args.data_variant), args.sources, variant=args.data_variant)
    runs = variant_dir(out, "runs", args.data_variant)
    import torch

    jobs_n = max(1, int(args.jobs))
    threads = max(1, (os.cpu_count() or 1) // jobs_n)
    torch.set_num_threads(threads)
    if not args.no_joint_shared and "joint_shared" in args.strategies and not joint_shared_available():
        args.no_joint_shared = True
        print("joint_shared: this joint strategy has no decoders=dimension option; row left out", file=sys.stderr)
    if args.no_joint_shared:
        args.strategies = ",".join(s for s in args.strategies.split(",") if s != "joint_shared")
    pool = make_pool(args)
    try:
        sweep = {"lam": None, "rule": "not run", "trials": []}
        if "ewc" in args.strategies.split(","):
            sweep_data = write_data(variant_dir(out, "sweep_data", args.data_variant), args.sources,
                                    multi_data.SWEEP_OFFSET, args.data_variant)
            sweep = multi_sweep.sweep(runs / "sweep", args, sweep_data, lambda js: run_all(js, pool))
        done = run_all(plan(args, runs, data, sweep["lam"]), pool)
    finally:
        if pool is not None:
            pool.shutdown()
    result = multi_report.build(done, args, sweep)
    result.update({"wall_s": time.perf_counter() - t0, "load_before": load_before, "load_after": uptime(),
                   "runs_wall_s": sum(r.get("wall_s") or 0.0 for r in done),
                   "reused_runs": sum(bool(r.get("reused")) for r in done),
                   "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jobs": jobs_n,
                               "torch_threads_per_run": threads},
                   "command": " ".join([Path(sys.executable).name, *sys.argv]),
                   "difficulty": {"topic_rate": multi_data.TOPIC_RATE, "grating_amp": multi_data.GRATING_AMP,
                                  "ct_texture": multi_data.CT_TEXTURE, "mri_texture": multi_data.MRI_TEXTURE,
                                  "dev_offset": multi_data.DEV_OFFSET, "data_variant": args.data_variant}})
    (out / "continual_multi.json").write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n",
                                              encoding="utf-8")
    md = multi_report.markdown(result)
    (out / "continual_multi.md").write_text(md, encoding="utf-8")
    print(md)
    print(f"wrote {out}/continual_multi.json, continual_multi.md", file=sys.stderr)


if __name__ == "__main__":
    main()
