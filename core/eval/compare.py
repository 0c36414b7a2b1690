"""``medkit compare``: several runs side by side (final values, forgetting, BWT, FWT per metric)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from medkit.eval.matrices import fmt_value
from medkit.eval.metrics import run_metrics
from medkit.eval.records import write_json
from medkit.eval.report import load_run, markdown_table


def compare_runs(run_dirs: Sequence[Path], *, baseline: Path | None = None) -> dict[str, Any]:
    """Per-run summary: final values, forgetting, BWT, FWT per metric. Without ``baseline``, the
    first ``tfs`` run among ``run_dirs`` (if any) provides ``b_j``."""
    runs = [load_run(Path(d)) for d in run_dirs]
    if baseline is None:
        baseline = next((r["dir"] for r in runs if r["strategy"] == "tfs"), None)
    out = []
    for r in runs:
        cl = run_metrics(r["dir"], baseline_run=baseline)
        out.append({"run": str(r["dir"]), "strategy": r["strategy"],
                    "stages": ["+".join(s) for s in r["manifest"].get("stages_done", [])],
                    "modalities": list(r["config"]["run"]["modalities"]),
                    "metrics": {k: v.to_dict() for k, v in cl.items()}})
    return {"baseline": None if baseline is None else str(baseline), "runs": out,
            "identical": identical_runs(runs)}


def identical_runs(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Groups (two or more run directories) whose every matrix holds the same values: different
    strategies that trained identically — e.g. a buffer that never got a step — which a comparison
    table would otherwise present as a tie."""
    groups: dict[str, list[str]] = {}
    for r in runs:
        key = repr(sorted((metric, m.modalities, m.rows) for metric, m in r["matrices"].items()))
        groups.setdefault(key, []).append(str(r["dir"]))
    return [g for g in groups.values() if len(g) > 1]


def identical_note(result: dict[str, Any]) -> str:
    """One warning line per group of runs with identical matrices (empty when there are none)."""
    return "\n".join(f"warning: {', '.join(Path(d).name for d in g)} have identical matrices (they trained "
                     f"the same: check each run's stage plan in its log, e.g. a buffer with no step)"
                     for g in result.get("identical", []))


def compare_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table (``–``: undefined, e.g. a mean over losses of
    different objectives; the JSON holds the per-modality values and the reasons)."""
    runs = result["runs"]
    mods: list[str] = []
    for r in runs:
        mods += [m for m in r["modalities"] if m not in mods]
    header = ["run", "strategy", "stages", *[f"loss {m}" for m in mods], "loss F first", "loss F max",
              "loss BWT", "kNN acc", "kNN F first", "kNN FWT", "linear acc"]
    rows = []
    for r in runs:
        loss = r["metrics"].get("pretext_loss", {})
        knn, lin = r["metrics"].get("knn_acc", {}), r["metrics"].get("linear_acc", {})
        final = loss.get("final", {})
        rows.append([Path(r["run"]).name, r["strategy"], str(len(r["stages"])),
                     *[fmt_value(final.get(m)) for m in mods],
                     *[fmt_value(loss.get(k)) for k in ("forgetting_first", "forgetting_max", "bwt")],
                     *[fmt_value(knn.get(k), 3) for k in ("final_mean", "forgetting_first", "fwt")],
                     fmt_value(lin.get("final_mean"), 3)])
    return header, rows


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def write_comparison(path: Path, result: dict[str, Any]) -> Path:
    """``.json``: every metric (strict JSON); ``.md``: the table and the FWT baseline."""
    path = Path(path)
    if path.suffix == ".json":
        write_json(path, result)
    else:
        header, rows = compare_table(result)
        note = f"\n\nFWT baseline: {result['baseline'] or 'none (b_j omitted)'}\n"
        if result.get("identical"):
            note += "\n" + identical_note(result) + "\n"
        path.write_text(markdown_table(header, rows) + note, encoding="utf-8")
    return path

