"""Sizing of bench/continual_multi.py on development sources: the smallest budget at which single-modality SSL learns.

The rule was fixed before any sizing run, and it reads only single-modality SSL and the random encoder
(``tfs``) on development sources (ids from :data:`multi_data.DEV_OFFSET`, which no reported run reads),
seed 900 — never a continual strategy, never a reported source:

    the first budget of ``--grid`` (ordered by cost) at which, on every modality, single-modality SSL's
    refitted-decoder loss is ≤ 0.9 × the random encoder's and its linear probe accuracy ≥ chance + 0.15
    (0.40 for four classes); if no budget of the grid passes, the last one — the grid lists only budgets
    whose full benchmark fits its time limit — and the modalities that miss are reported as such.

A budget is ``steps`` (optimizer steps per stage) and ``lr``; the probe budget, refit budget and data
size are the other options, as given (the bench's defaults). Each budget costs one ``tfs`` run and one
single-modality run per modality. Writes ``size.json`` (every budget's numbers, the rule, the choice).

    python bench/multi_size.py --grid 60:3e-3,120:3e-3,180:3e-3 --out /tmp/size
    python bench/multi_size.py --data-variant v2 --only xray,ct,mri --out /tmp/size   # the v2 data
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import continual_multi as cm
import multi_data

from medkit.eval.records import json_safe

SEED = 900
MODS = list(cm.MODALITIES)  # ``--only a,b``: a subset, for a quick look (the rule needs all four)
REFIT_RATIO = 0.9
PROBE_MARGIN = 0.15
RULE = (f"first budget (by cost) at which single-modality SSL's final refitted-decoder loss is ≤ {REFIT_RATIO} × "
        f"the random encoder's and its linear probe ≥ chance + {PROBE_MARGIN} on every modality; development "
        f"sources (from {multi_data.DEV_OFFSET}), seed {SEED}; else the largest budget of the grid")


def _final(run_dir: Path, metric: str, mod: str) -> float | None:
    from medkit.eval.metrics import run_metrics

    m = run_metrics(run_dir).get(metric)
    return None if m is None else m.final.get(mod)


def budget_jobs(root: Path, args: Any, data: dict[str, str], steps: int, lr: float) -> list[dict[str, Any]]:
    """One single-modality SSL run per modality at ``steps`` / ``lr``."""
    jobs = []
    for m in MODS:
        a = type(args)(**{**vars(args), "steps": steps, "lr": lr})
        jobs.append({"row": f"single_{m}", "strategy": "sequential", "order": "size", "seed": SEED,
                     "modalities": (m,), "steps": steps, "extra": [], "data": data, "args": a,
                     "run_dir": str(root / f"steps{steps}-lr{lr:g}" / f"single_{m}")})
    return jobs


def evaluate(budget: dict[str, Any], tfs_dir: Path) -> dict[str, Any]:
    """Per modality: refit ratio to the random encoder, linear / kNN accuracy, and whether the rule holds."""
    per, ok = {}, True
    for m in MODS:
        run = Path(budget["run_dirs"][m])
        refit, base = _final(run, "refit_loss", m), _final(tfs_dir, "refit_loss", m)
        lin, knn = _final(run, "linear_acc", m), _final(run, "knn_acc", m)
        ratio = None if refit is None or not base else refit / base
        passed = ratio is not None and lin is not None and ratio <= REFIT_RATIO and lin >= 0.25 + PROBE_MARGIN
        ok = ok and passed
        per[m] = {"refit_ratio": ratio, "linear_acc": lin, "knn_acc": knn, "tfs_linear_acc":
                  _final(tfs_dir, "linear_acc", m), "tfs_knn_acc": _final(tfs_dir, "knn_acc", m), "passes": passed}
    return {"steps": budget["steps"], "lr": budget["lr"], "per_modality": per, "passes": ok}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    grid_arg = "60:3e-3,120:3e-3"
    if "--grid" in argv:
        i = argv.index("--grid")
        grid_arg = argv[i + 1]
        del argv[i:i + 2]
    if "--only" in argv:
        i = argv.index("--only")
        MODS[:] = argv[i + 1].split(",")
        del argv[i:i + 2]
    args = cm.parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cm.bench_env(out)
    t0 = time.perf_counter()
    data = cm.write_data(cm.variant_dir(out, "dev_data", args.data_variant), args.sources, multi_data.DEV_OFFSET,
                         args.data_variant)
    runs = cm.variant_dir(out, "runs", args.data_variant)
    grid = [(int(s), float(lr)) for s, lr in (g.split(":") for g in grid_arg.split(",") if g)]
    tfs = {"row": "tfs", "strategy": "tfs", "order": "size", "seed": SEED, "modalities": cm.ORDERS["forward"],
           "steps": 1, "extra": [], "data": data, "args": args, "run_dir": str(runs / "tfs")}
    jobs = [tfs] + [j for steps, lr in grid for j in budget_jobs(runs, args, data, steps, lr)]
    pool = cm.make_pool(args)
    try:
        done = cm.run_all(jobs, pool)
    finally:
        if pool is not None:
            pool.shutdown()
    walls = {r["run_dir"]: r.get("wall_s") for r in done}
    budgets = []
    for steps, lr in grid:
        dirs = {m: str(runs / f"steps{steps}-lr{lr:g}" / f"single_{m}") for m in MODS}
        b = evaluate({"steps": steps, "lr": lr, "run_dirs": dirs}, Path(tfs["run_dir"]))
        b["wall_s"] = {m: walls.get(d) for m, d in dirs.items()}
        budgets.append(b)
    chosen = next((b for b in budgets if b["passes"]), budgets[-1] if budgets else None)
    result = {"rule": RULE, "data_variant": args.data_variant, "grid": grid_arg, "seed": SEED, "sources": args.sources,
              "val_fraction": args.val_fraction, "batch_size": args.batch_size, "probe_train": args.probe_train,
              "probe_steps": args.probe_steps, "refit_steps": args.refit_steps, "probe_query": args.probe_query,
              "budgets": budgets, "tfs_wall_s": walls.get(tfs["run_dir"]),
              "chosen": None if chosen is None else {"steps": chosen["steps"], "lr": chosen["lr"],
                                                     "passes": chosen["passes"]},
              "wall_s": time.perf_counter() - t0, "load_after": cm.uptime()}
    (out / "size.json").write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    for b in budgets:
        cells = "  ".join(f"{m}: refit×{v['refit_ratio'] or float('nan'):.3f} lin {v['linear_acc'] or float('nan'):.3f}"
                          f" (tfs {v['tfs_linear_acc'] or float('nan'):.3f})" for m, v in b["per_modality"].items())
        print(f"steps {b['steps']} lr {b['lr']:g} {'PASS' if b['passes'] else 'fail'}  {cells}")
    print(f"chosen: {result['chosen']}  ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
