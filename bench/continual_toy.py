"""Benchmark: a toy continual run of every strategy over the demo modalities, then forgetting/BWT/FWT.

Each strategy runs ``medkit run`` (tiny preset, a few steps per stage, built-in demo data) in its own
subprocess and run directory; a ``tfs`` run (no training) provides FWT's untrained baseline
``b_j``. The metrics come from :mod:`medkit.eval.metrics` (docs/continual-metrics.md). Prints
the comparison and a forgetting table per metric, and writes JSON.

    python bench/continual_toy.py --max-steps 4 --out bench/results/continual_toy.json
    python bench/continual_toy.py --strategies sequential,rehearsal --modalities xray,pathology --max-steps 2

Strategies that are not installed are skipped with a note. The default (5 modalities, every
strategy, 4 steps, probes capped at 64 samples) is sized for a few minutes per strategy on a
2-core CPU; raise ``--max-steps`` (and ``--probe-max-train``) to see real forgetting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STRATEGIES = ("sequential", "joint", "rehearsal", "er", "ewc", "packnet", "cassle")
MODALITIES = ("report", "xray", "ct", "mri", "pathology")
PLUGIN_OF = {"rehearsal": "medkit-plugin-medcoss", "er": "medkit-plugin-er", "ewc": "medkit-plugin-ewc",
             "packnet": "medkit-plugin-packnet", "cassle": "medkit-plugin-cassle"}


def installed_strategies() -> list[str]:
    from medkit.registry import get_host

    return get_host().names("strategy")


def probe_overrides(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """``trainer.probe_*`` overrides when this medkit's config has those keys, else a note."""
    from medkit.config.compose import TRAINER_DEFAULTS

    wanted = {"probe_max_train": args.probe_max_train, "probe_max_query": args.probe_max_query,
              "probe_unseen": "true"}  # forward transfer needs R[j-1, j]
    if all(k in TRAINER_DEFAULTS for k in wanted):
        return [f"trainer.{k}={v}" for k, v in wanted.items()], None
    return [], "this medkit has no trainer.probe_* keys: probes use evaluate_seen's defaults (slower)"


def run_strategy(strategy: str, run_dir: Path, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """``medkit run`` in a subprocess; its log goes to ``<run_dir>.log``."""
    cmd = [sys.executable, "-m", "medkit.cli.main", "run", "--modality", ",".join(args.modalities),
           "--strategy", strategy, "--preset", "tiny", "--max-steps", str(args.max_steps),
           "--seed", str(args.seed), "--run-dir", str(run_dir), "trainer.eval_batches=1",
           "trainer.checkpoint_every=1000000", "trainer.log_every=1000000", *extra, *args.override]
    log_path = run_dir.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            code = -1
    wall = time.perf_counter() - t0
    record: dict[str, Any] = {"strategy": strategy, "run_dir": str(run_dir), "wall_s": round(wall, 1),
                              "log": str(log_path), "status": "ok" if code == 0 else "failed"}
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        record["error"] = "timed out" if code == -1 else " / ".join(tail)
    return record


def forgetting_table(comparison: dict[str, Any], metric: str) -> tuple[list[str], list[list[str]]]:
    from medkit.eval.matrices import fmt_value

    header = ["strategy", "final mean", "F first", "F max", "BWT", "FWT"]
    rows = []
    for r in comparison["runs"]:
        m = r["metrics"].get(metric)
        if m is None:
            continue
        keys = ("final_mean", "forgetting_first", "forgetting_max", "bwt", "fwt")
        rows.append([r["strategy"], *[fmt_value(m[k]) for k in keys]])
    return header, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated strategies")
    parser.add_argument("--modalities", default=",".join(MODALITIES), help="stage order, comma-separated")
    parser.add_argument("--max-steps", type=int, default=4, help="optimizer steps per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-max-train", type=int, default=64, help="kNN memory / linear-probe samples")
    parser.add_argument("--probe-max-query", type=int, default=64, help="probe query samples")
    parser.add_argument("--no-baseline", action="store_true", help="skip the tfs run (FWT then omits b_j)")
    parser.add_argument("--runs-dir", default=None, help="keep the run directories here (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per strategy")
    parser.add_argument("--override", action="append", default=[], help="extra KEY=VALUE for every run")
    parser.add_argument("--out", default="bench/results/continual_toy.json")
    args = parser.parse_args()
    args.modalities = [m for m in args.modalities.split(",") if m]
    wanted = [s for s in args.strategies.split(",") if s]

    from medkit.eval.compare import compare_runs, compare_table, text_table

    available = installed_strategies()
    notes = [f"{s}: not installed (pip install {PLUGIN_OF.get(s, 'the plugin providing it')}); skipped"
             for s in wanted if s not in available]
    todo = [s for s in wanted if s in available]
    if not args.no_baseline and "tfs" in available and "tfs" not in todo:
        todo.append("tfs")
    extra, note = probe_overrides(args)
    if note:
        notes.append(note)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)

    tmp = None if args.runs_dir else tempfile.TemporaryDirectory(prefix="medkit-continual-toy-")
    root = Path(args.runs_dir or tmp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for strategy in todo:
        run_dir = root / f"{strategy}-{'-'.join(args.modalities)}"
        print(f"running {strategy} -> {run_dir}", file=sys.stderr, flush=True)
        records.append(run_strategy(strategy, run_dir, args, extra))
        print(f"  {records[-1]['status']} in {records[-1]['wall_s']} s {records[-1].get('error', '')}",
              file=sys.stderr, flush=True)
    ok = [Path(r["run_dir"]) for r in records if r["status"] == "ok"]
    baseline = next((Path(r["run_dir"]) for r in records if r["strategy"] == "tfs" and r["status"] == "ok"), None)
    comparison = compare_runs(ok, baseline=baseline) if ok else {"baseline": None, "runs": []}
    trained = {"baseline": comparison["baseline"],
               "runs": [r for r in comparison["runs"] if r["strategy"] != "tfs"]}

    header, rows = compare_table(trained)
    print(text_table(header, rows))
    for metric in ("pretext_loss", "knn_acc", "linear_acc"):
        h, r = forgetting_table(trained, metric)
        if r:
            print(f"\n{metric} (forgetting > 0 = forgot; BWT/FWT > 0 = better)")
            print(text_table(h, r))
    result = {"benchmark": "continual_toy", "modalities": args.modalities, "max_steps": args.max_steps,
              "seed": args.seed, "probe_max_train": args.probe_max_train, "notes": notes,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "runs": records, "comparison": comparison}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}", file=sys.stderr)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
