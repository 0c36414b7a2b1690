"""How long the light CLI commands take to start (``medkit --help``, ``plugins list --json``).

Usage: python bench/cli_startup.py [--reps 5]; prints a table and writes bench/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {"--help": ["--help"], "plugins list --json": ["plugins", "list", "--json"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for name, argv in COMMANDS.items():
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "medkit.cli.main", *argv], capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        rows.append({"command": f"medkit {name}", "reps": args.reps, "best_s": min(times),
                     "median_s": statistics.median(times), "load": os.getloadavg()[0]})
    print(f"{'command':28s} {'best s':>8s} {'median s':>9s} {'load':>5s}")
    for r in rows:
        print(f"{r['command']:28s} {r['best_s']:8.3f} {r['median_s']:9.3f} {r['load']:5.1f}")
    out = Path(__file__).parent / "results" / "cli_startup.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
