"""Benchmark: how far EWC's sampled Fisher (``fisher_batches=K``) is from the full pass (the default).

Runs the real engine once per setting on the synthetic test modality (tiny encoder, one stage, same
seed, so the weights θ* at the stage end are identical in every run — EWC adds no penalty in the
first stage) and compares the Fisher it stores in ``strategy/state.safetensors`` with the full pass's,
element by element over every penalised parameter: the relative difference ``|F_K − F| / F`` on
elements whose full-pass value is above the 10th percentile (smaller ones are dominated by float noise),
as median / 95th percentile / max, and the relative L2 distance ``‖F_K − F‖ / ‖F‖``.

    python bench/ewc_fisher.py --steps 30 --ks 2,4,16 --out bench/results/ewc_fisher.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load


def fisher_of(root: Path, k: int | None, steps: int, seed: int) -> dict[str, torch.Tensor]:
    from medkit.testing import load_tensors, run_synthetic

    value = "null" if k is None else str(k)
    run = run_synthetic(root / f"k{value}", "ewc", ("synth_a",), max_steps=steps, seed=seed,
                        overrides=(f"strategy.fisher_batches={value}",), demo_dir=root / "demo")
    tensors = load_tensors(run / "strategy" / "state.safetensors")
    return {n[len("fisher.0."):]: t for n, t in tensors.items() if n.startswith("fisher.0.")}


def compare(full: dict[str, torch.Tensor], sampled: dict[str, torch.Tensor]) -> dict[str, float]:
    f = torch.cat([full[n].reshape(-1) for n in sorted(full)]).double()
    s = torch.cat([sampled[n].reshape(-1) for n in sorted(full)]).double()
    keep = f > torch.quantile(f, 0.10)
    rel = ((s - f).abs() / f)[keep]
    return {"rel_median": float(rel.median()), "rel_p95": float(torch.quantile(rel, 0.95)),
            "rel_max": float(rel.max()), "rel_l2": float((s - f).norm() / f.norm()), "elements": int(keep.sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--ks", default="2,4,16", help="comma-separated K values to compare with the full pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    t0, before = time.time(), load()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        full = fisher_of(root, None, args.steps, args.seed)
        rows: list[dict[str, Any]] = []
        for k in (int(x) for x in args.ks.split(",")):
            rows.append({"K": k, **compare(full, fisher_of(root, k, args.steps, args.seed))})
    print(f"{'K':>4} {'median':>8} {'p95':>8} {'max':>9} {'rel L2':>8}  (relative to the full pass)")
    for r in rows:
        print(f"{r['K']:>4} {r['rel_median']:>8.3f} {r['rel_p95']:>8.3f} {r['rel_max']:>9.3f} {r['rel_l2']:>8.3f}")
    result = {"bench": "ewc_fisher", "steps": args.steps, "seed": args.seed, "rows": rows,
              "wall_s": time.time() - t0, "load_before": before, "load_after": load()}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
