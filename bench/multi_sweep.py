"""EWC's λ for bench/continual_multi.py, chosen on sources no reported run reads (issue 18, item 4)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import multi_data

SWEEP_MODALITIES = ("report", "xray")  # the first two stages of the forward order


def sweep_jobs(root: Path, args: argparse.Namespace, data: dict[str, str]) -> list[dict[str, Any]]:
    """A ``tfs`` run and one EWC run per λ of ``--ewc-grid``: stages 1-2, the sweep seed, sweep data."""
    grid = [float(x) for x in args.ewc_grid.split(",") if x]
    jobs = []
    for lam in [None, *grid]:
        row = "tfs" if lam is None else f"ewc-lam{lam:g}"
        jobs.append({"row": row, "strategy": "tfs" if lam is None else "ewc", "order": "sweep",
                     "seed": args.sweep_seed, "modalities": SWEEP_MODALITIES, "steps": args.steps,
                     "extra": [] if lam is None else [f"strategy.lam={lam}"], "data": data, "args": args,
                     "run_dir": str(root / f"{row}-s{args.sweep_seed}"), "lam": lam})
    return jobs


def relative_refit(run_dir: Path, tfs_dir: Path) -> float | None:
    """Mean over the sweep's modalities of the final refit_loss divided by the random encoder's."""
    from medkit.eval.metrics import run_metrics

    mine = run_metrics(run_dir).get("refit_loss")
    base = run_metrics(tfs_dir).get("refit_loss")
    if mine is None or base is None:
        return None
    ratios = [mine.final[m] / base.final[m] for m in SWEEP_MODALITIES
              if mine.final.get(m) is not None and base.final.get(m)]
    return sum(ratios) / len(ratios) if len(ratios) == len(SWEEP_MODALITIES) else None


def sweep(root: Path, args: argparse.Namespace, data: dict[str, str],
          run: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> dict[str, Any]:
    """λ with the lowest mean relative final refit_loss of stages 1-2 on the sweep's own sources."""
    jobs = sweep_jobs(root, args, data)
    lams = [j.pop("lam") for j in jobs]
    recs = run(jobs)
    tfs_dir = Path(recs[0]["run_dir"])
    trials = [{"lam": lam, "relative_final_refit_loss": relative_refit(Path(r["run_dir"]), tfs_dir),
               "wall_s": r.get("wall_s")} for lam, r in zip(lams[1:], recs[1:])]
    ok = [t for t in trials if t["relative_final_refit_loss"] is not None]
    best = min(ok, key=lambda t: (round(t["relative_final_refit_loss"], 6), t["lam"]))["lam"] if ok else 1.0
    return {"rule": (f"argmin over λ in {args.ewc_grid} of the mean, over {', '.join(SWEEP_MODALITIES)} (stages 1-2), "
                     f"of the final refitted-decoder loss divided by the random encoder's; seed {args.sweep_seed}, "
                     f"on sources from {multi_data.SWEEP_OFFSET} (no reported run's sample); ties: the smaller λ"),
            "grid": lams[1:], "trials": trials, "lam": best}
