"""Per-modality breakdown of a bench/continual_multi.py result: seed-paired 95 % intervals per modality.

The benchmark's findings average over the four modalities; where single-modality SSL learns on only
some of them (see the sizing), a mean over all four dilutes what happens on those. This reads
``continual_multi.json`` (no run is repeated) and gives, for every modality alike:

* sequential's first-value forgetting of the linear and kNN probes and of the refitted-decoder loss
  (> 0 = forgot), over both orders within a seed;
* MedCoSS (``rehearsal``) − each baseline in final linear and kNN accuracy, seed-paired over both orders.

    python bench/multi_posthoc.py OUT/continual_multi.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from multi_report import PROBES, _ci, paired, summarise

MODS = ("report", "xray", "ct", "mri")
BASELINES = ("sequential", "er", "ewc", "packnet", "cassle", "joint", "joint_shared")


def _val(run: dict[str, Any], metric: str, key: str, mod: str) -> float | None:
    v = (run.get("values", {}).get(metric) or {}).get(key)
    return v.get(mod) if isinstance(v, dict) else None


def forgetting(runs: list[dict[str, Any]], row: str = "sequential") -> dict[str, dict[str, Any]]:
    """Per modality and metric: ``row``'s first-value forgetting, averaged over orders within a seed."""
    out: dict[str, dict[str, Any]] = {}
    for mod in MODS:
        out[mod] = {}
        for metric in (*PROBES, "refit_loss"):
            per_seed: dict[int, list[float]] = {}
            for r in runs:
                v = _val(r, metric, "forgetting_per", mod) if r["row"] == row else None
                if v is not None:
                    per_seed.setdefault(r["seed"], []).append(v)
            out[mod][metric] = summarise([statistics.fmean(v) for _, v in sorted(per_seed.items())])
    return out


def versus(runs: list[dict[str, Any]], a: str = "rehearsal") -> dict[str, dict[str, dict[str, Any]]]:
    """Per baseline, modality and probe: ``a`` − baseline in final accuracy (seed-paired, both orders)."""
    rows = {r["row"] for r in runs}
    return {b: {mod: {p: paired(runs, a, b, lambda r, m=mod, k=p: _val(r, k, "final", m)) for p in PROBES}
                for mod in MODS} for b in BASELINES if b in rows}


def main(argv: list[str] | None = None) -> None:
    path = Path((sys.argv[1:] if argv is None else argv)[0])
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    f = forgetting(runs)
    lines = ["## Sequential's forgetting per modality (> 0 = forgot; seed-paired over both orders)", "",
             "| modality | linear | kNN | refit loss |", "|---|---|---|---|"]
    for mod in MODS:
        lines.append(f"| {mod} | {_ci(f[mod]['linear_acc'])} | {_ci(f[mod]['knn_acc'])} | "
                     f"{_ci(f[mod]['refit_loss'])} |")
    lines += ["", "## MedCoSS − baseline, final accuracy per modality (seed-paired over both orders)", "",
              "| baseline | probe | " + " | ".join(MODS) + " |", "|---|---|" + "---|" * len(MODS)]
    for b, per in versus(runs).items():
        for p in PROBES:
            lines.append(f"| {b} | {p} | " + " | ".join(_ci(per[m][p]) for m in MODS) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
