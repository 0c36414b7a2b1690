"""Tables and tested findings of bench/continual_multi.py: per-row metrics, seed-paired intervals, verdicts."""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path
from typing import Any

PROBES = ("linear_acc", "knn_acc")
LOSSES = ("refit_loss", "pretext_loss")
CHANCE = 0.25  # four classes, balanced by construction (label = source mod 4)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 29: 2.045}
EQUIV_MARGIN = 0.05  # "≈ single-modality SSL": the paired interval of the probe accuracy inside ± this


def summarise(values: list[float | None]) -> dict[str, Any]:
    """Mean, std, n and the 95 % t-interval of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"mean": None, "std": None, "n": 0, "ci95": None}
    mean = statistics.fmean(xs)
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    t = T_975.get(len(xs) - 1, 2.0)
    half = t * std / math.sqrt(len(xs)) if len(xs) > 1 else None
    return {"mean": mean, "std": std, "n": len(xs), "ci95": None if half is None else [mean - half, mean + half]}


def _mean(xs: list[float | None]) -> float | None:
    ok = [x for x in xs if x is not None]
    return statistics.fmean(ok) if ok and len(ok) == len(xs) else None


def run_values(run_dir: Path, tfs_dir: Path | None) -> dict[str, Any]:
    """Per metric: the matrix, each modality's final and right-after-own-stage value, forgetting,
    BWT and FWT (from :func:`medkit.eval.metrics.run_metrics`, FWT against ``tfs``). Losses are also
    divided by the same seed's random-encoder loss (``*_rel``), so text and image losses average."""
    from medkit.eval.matrices import run_matrices
    from medkit.eval.metrics import run_metrics

    mats, cl = run_matrices(run_dir), run_metrics(run_dir, baseline_run=tfs_dir)
    base = run_matrices(tfs_dir) if tfs_dir is not None else {}
    out: dict[str, Any] = {}
    for metric in (*PROBES, *LOSSES):
        if metric not in mats:
            continue
        m, c = mats[metric], cl[metric]
        after_own = {}
        for j, mod in enumerate(m.modalities):
            own = next((i for i, stage in enumerate(m.stages) if mod in stage), None)
            after_own[mod] = None if own is None else m.rows[own][j]
        d = {"modalities": m.modalities, "rows": m.rows, "final": dict(c.final), "after_own": after_own,
             "forgetting_per": dict(c.forgetting_first_per), "fwt_per": dict(c.fwt_per),
             "final_mean": c.final_mean, "forgetting": c.forgetting_first, "bwt": c.bwt, "fwt": c.fwt}
        if metric in LOSSES and metric in base:
            b = dict(zip(base[metric].modalities, base[metric].rows[-1]))
            rel = {k: (v / b[k] if v is not None and b.get(k) else None) for k, v in c.final.items()}
            d["final_rel"] = rel
            d["final_mean"] = _mean(list(rel.values()))
            d["forgetting"] = _mean([v / b[k] if b.get(k) else None for k, v in c.forgetting_first_per.items()]) \
                if c.forgetting_first_per else None
            d["bwt"] = None if d["forgetting"] is None else -d["forgetting"]
        out[metric] = d
    return out


def attach(done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run's values, FWT against the random encoder of the same seed and order."""
    tfs = {(r["order"], r["seed"]): Path(r["run_dir"]) for r in done if r["row"] == "tfs"}
    for r in done:
        base = tfs.get((r["order"], r["seed"])) or tfs.get(("forward", r["seed"]))
        r["values"] = run_values(Path(r["run_dir"]), base)
    return done


SEPARABILITY_ROWS = ("joint", "joint_shared")


def attach_separability(runs: list[dict[str, Any]]) -> None:
    """ct-vs-mri separability (:func:`medkit.eval.separability.modality_separability`: probes predicting
    the modality from the final encoder's pooled held-out features) of the joint rows' runs."""
    from medkit.api.errors import MedkitError
    from medkit.eval.separability import modality_separability
    from medkit.registry import get_host

    for r in runs:
        if r["row"] not in SEPARABILITY_ROWS:
            continue
        try:
            res = modality_separability(r["run_dir"], components=get_host(), max_per_modality=100, linear_steps=50)
            g = res["groups"].get("patch_3d", {})
            r["separability_3d"] = {k: g.get(k) for k in ("linear_acc", "knn_acc", "chance")}
        except MedkitError as exc:
            r["separability_3d"] = {"reason": str(exc)}


def _get(run: dict[str, Any], metric: str, key: str, mod: str | None = None) -> float | None:
    v = run["values"].get(metric, {}).get(key)
    return v.get(mod) if isinstance(v, dict) and mod is not None else (None if isinstance(v, dict) else v)


def single_ceiling(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per modality and probe: the single-modality SSL model's accuracy (seed mean ± interval)."""
    out: dict[str, dict[str, Any]] = {}
    for mod in ("report", "xray", "ct", "mri"):
        mine = [r for r in runs if r["row"] == f"single_{mod}"]
        out[mod] = {p: summarise([_get(r, p, "final", mod) for r in mine]) for p in (*PROBES, "refit_loss")}
    return out


def plasticity(run: dict[str, Any], single: dict[str, dict[str, Any]], metric: str) -> float | None:
    """Mean over modalities of (accuracy right after the modality's own stage − single-modality SSL's, same seed)."""
    diffs = []
    for mod, v in (run["values"].get(metric, {}).get("after_own") or {}).items():
        s = single.get((mod, run["seed"]))
        diffs.append(None if v is None or s is None else v - s)
    return _mean(diffs) if diffs else None


def table(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (row, order) and metric: final, forgetting, BWT, FWT, plasticity over seeds; per-modality finals."""
    single = {(r["row"][7:], r["seed"]): _get(r, "linear_acc", "final", r["row"][7:])
              for r in runs if r["row"].startswith("single_")}
    single_knn = {(r["row"][7:], r["seed"]): _get(r, "knn_acc", "final", r["row"][7:])
                  for r in runs if r["row"].startswith("single_")}
    out: dict[str, Any] = {}
    for key in sorted({(r["row"], r["order"]) for r in runs}, key=lambda k: (k[1], k[0])):
        mine = [r for r in runs if (r["row"], r["order"]) == key]
        row: dict[str, Any] = {"seeds": sorted(r["seed"] for r in mine)}
        for metric in (*PROBES, *LOSSES):
            mods = next((r["values"][metric]["modalities"] for r in mine if metric in r["values"]), [])
            row[metric] = {k: summarise([_get(r, metric, k) for r in mine])
                           for k in ("final_mean", "forgetting", "bwt", "fwt")}
            row[metric]["final_per"] = {m: summarise([_get(r, metric, "final", m) for r in mine]) for m in mods}
            if metric in PROBES and not key[0].startswith("single_"):
                ref = single if metric == "linear_acc" else single_knn
                row[metric]["plasticity"] = summarise([plasticity(r, ref, metric) for r in mine])
        if key[0] in SEPARABILITY_ROWS:
            row["separability_3d"] = {k: summarise([(r.get("separability_3d") or {}).get(k) for r in mine])
                                      for k in ("linear_acc", "knn_acc", "chance")}
        out[f"{key[0]}@{key[1]}"] = row
    return out


def paired(runs: list[dict[str, Any]], a: str, b: str, value: Any, orders: tuple[str, ...] = ("forward", "reverse"),
           b_order: str | None = None) -> dict[str, Any]:
    """Seed-paired ``value(run a) − value(run b)`` (same seed, same order; ``b_order``: b's runs of that
    order), averaged over the stage orders within each seed, so ``n`` = seeds (independent pairs)."""
    idx = {(r["row"], r["order"], r["seed"]): r for r in runs}
    per_seed: dict[int, list[float]] = {}
    for (row, order, seed), r in idx.items():
        if row != a or order not in orders:
            continue
        other = idx.get((b, b_order or order, seed))
        va, vb = value(r), None if other is None else value(other)
        if va is not None and vb is not None:
            per_seed.setdefault(seed, []).append(va - vb)
    return summarise([statistics.fmean(v) for _, v in sorted(per_seed.items())])


def _sign(d: dict[str, Any]) -> str:
    ci = d.get("ci95")
    return "a > b" if ci and ci[0] > 0 else "a < b" if ci and ci[1] < 0 else "not resolved"


def findings(runs: list[dict[str, Any]], rows: set[str]) -> list[dict[str, Any]]:
    """The paper's findings as tested statements, each with its seed-paired intervals and a verdict."""
    out = []
    fm = lambda metric: (lambda r: _get(r, metric, "final_mean"))
    # 1. MedCoSS >= every baseline on the representation metrics
    baselines = [b for b in ("sequential", "er", "ewc", "packnet", "cassle", "joint", "joint_shared") if b in rows]
    tests = []
    for b in baselines:
        for metric, sign in (("linear_acc", 1), ("knn_acc", 1), ("refit_loss", -1)):
            d = paired(runs, "rehearsal", b, fm(metric))
            s = _sign(d)
            better = (s == "a > b") if sign > 0 else (s == "a < b")
            worse = (s == "a < b") if sign > 0 else (s == "a > b")
            tests.append({"baseline": b, "metric": metric, "diff": d,
                          "outcome": "MedCoSS better" if better else "baseline better" if worse else "not resolved"})
    verdict = ("contradicted" if any(t["outcome"] == "baseline better" for t in tests) else
               "supported" if tests and all(t["outcome"] == "MedCoSS better" for t in tests) else
               "not resolved at this size")
    out.append({"finding": "MedCoSS (rehearsal) is at least as good as every baseline on the representation metrics "
                           "(final linear / kNN accuracy, final refitted-decoder loss relative to the random encoder)",
                "tests": tests, "verdict": verdict})
    # 2. MedCoSS ≈ single-modality SSL on every modality
    tests = []
    for mod in ("report", "xray", "ct", "mri"):
        for metric in PROBES:
            d = paired(runs, "rehearsal", f"single_{mod}", lambda r, m=mod, k=metric: _get(r, k, "final", m),
                       b_order="single")
            ci = d["ci95"]
            outcome = (f"within ±{EQUIV_MARGIN:.2f}" if ci and ci[0] >= -EQUIV_MARGIN and ci[1] <= EQUIV_MARGIN else
                       f"outside ±{EQUIV_MARGIN:.2f}" if ci and (ci[1] < -EQUIV_MARGIN or ci[0] > EQUIV_MARGIN)
                       else "not resolved")
            tests.append({"modality": mod, "metric": metric, "diff": d, "outcome": outcome})
    verdict = ("supported" if tests and all(t["outcome"].startswith("within") for t in tests) else
               "contradicted" if any(t["outcome"].startswith("outside") for t in tests) else
               "not resolved at this size")
    out.append({"finding": f"MedCoSS matches single-modality SSL on each modality (final probe accuracy; paired "
                           f"interval inside ±{EQUIV_MARGIN})", "tests": tests, "verdict": verdict})
    # 3. joint with a shared decoder shows modality collision
    if "joint_shared" in rows:
        tests = []
        for mod in ("report", "xray", "ct", "mri"):
            for metric in PROBES:
                d = paired(runs, "joint_shared", "joint", lambda r, m=mod, k=metric: _get(r, k, "final", m))
                tests.append({"modality": mod, "metric": metric, "diff": d, "outcome": _sign(d)})
        for metric in PROBES:
            d = paired(runs, "joint_shared", "joint", fm(metric))
            tests.append({"modality": "mean", "metric": metric, "diff": d, "outcome": _sign(d)})
        for metric in PROBES:
            d = paired(runs, "joint_shared", "joint",
                       lambda r, k=metric: (r.get("separability_3d") or {}).get(k))
            tests.append({"modality": "ct vs mri separability", "metric": metric, "diff": d, "outcome": _sign(d)})
        key_tests = [t for t in tests if t["modality"] in ("mean", "ct vs mri separability")]
        evidence = any(t["outcome"] == "a < b" for t in key_tests)
        counter = any(t["outcome"] == "a > b" for t in key_tests)
        verdict = ("supported" if evidence and not counter else "contradicted" if counter and not evidence
                   else "not resolved at this size")
        out.append({"finding": "joint with a decoder shared per dimension (Joint SSL*) has lower per-modality "
                               "probe accuracy than joint with per-modality decoders (Joint SSL†), and/or CT and "
                               "MRI features that separate less: modality collision (a = shared, b = "
                               "per-modality; the verdict reads the mean probe accuracy over modalities and the "
                               "ct-vs-mri separability)", "tests": tests, "verdict": verdict})
    else:
        out.append({"finding": "joint with a shared decoder shows modality collision", "tests": [],
                    "verdict": "not tested: no joint_shared row in this run"})
    # 4. sequential forgets at the representation level
    tests = []
    for metric in (*PROBES, "refit_loss"):
        per_seed: dict[int, list[float]] = {}
        for r in runs:
            v = _get(r, metric, "forgetting") if r["row"] == "sequential" else None
            if v is not None:
                per_seed.setdefault(r["seed"], []).append(v)
        d = summarise([statistics.fmean(v) for _, v in sorted(per_seed.items())])
        ci = d["ci95"]
        tests.append({"metric": metric, "forgetting": d,
                      "outcome": "forgets" if ci and ci[0] > 0 else "improves" if ci and ci[1] < 0 else "not resolved"})
    verdict = ("supported" if any(t["outcome"] == "forgets" for t in tests) and
               not any(t["outcome"] == "improves" for t in tests) else
               "contradicted" if all(t["outcome"] == "improves" for t in tests) else "not resolved at this size")
    out.append({"finding": "sequential training forgets at the representation level (forgetting of probes and of the "
                           "refitted-decoder loss, relative to the random encoder's loss, > 0)",
                "tests": tests, "verdict": verdict})
    return out


def ablations(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each MedCoSS ablation row − ``rehearsal`` (forward order, seed-paired) in the final metrics."""
    out: dict[str, Any] = {}
    for row in sorted({r["row"] for r in runs if r["row"].startswith("rehearsal_")}):
        out[row] = {m: paired(runs, row, "rehearsal", lambda r, m=m: _get(r, m, "final_mean"), orders=("forward",))
                    for m in (*PROBES, "refit_loss")}
    return out


def build(done: list[dict[str, Any]], args: argparse.Namespace, sweep: dict[str, Any]) -> dict[str, Any]:
    """The result document: runs with their values, the table, the ceilings and the findings."""
    import json

    runs = attach(done)
    attach_separability(runs)
    held_out: dict[str, Any] = {}
    for r in runs:
        split = Path(r["run_dir"]) / "metrics" / "split.json"
        if r["order"] == "forward" and split.is_file():
            for m, v in json.loads(split.read_text())["modalities"].items():
                held_out[m] = {"sources": len(v.get("val", [])), "train_sources": len(v.get("train", []))}
            break
    rows = {r["row"] for r in runs}
    for r in runs:
        r.pop("args", None)
    return {"benchmark": "continual_multi", "orders": {"forward": ["report", "xray", "ct", "mri"],
                                                       "reverse": ["mri", "ct", "xray", "report"]},
            "seeds": [int(s) for s in args.seeds.split(",") if s], "steps": args.steps, "sources": args.sources,
            "val_fraction": args.val_fraction, "batch_size": args.batch_size, "probe_train": args.probe_train,
            "probe_steps": args.probe_steps, "refit_steps": args.refit_steps, "lr": args.lr, "quick": args.quick,
            "held_out": held_out, "chance": CHANCE, "ewc_sweep": sweep, "ceiling": single_ceiling(runs),
            "table": table(runs), "findings": findings(runs, rows), "ablations_vs_rehearsal": ablations(runs),
            "runs": runs}


def _f(s: dict[str, Any] | None, digits: int = 3) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _ci(s: dict[str, Any]) -> str:
    ci = s.get("ci95")
    return "n/a" if not ci else f"{s['mean']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def markdown(result: dict[str, Any]) -> str:
    """The result as Markdown: the main table, per-modality probes with chance and ceiling, findings."""
    lines = [f"# Continual benchmark over 1D/2D/3D ({len(result['seeds'])} seeds, {result['steps']} steps per stage)",
             "", f"Held-out sources: {result['held_out']}. EWC λ = {result['ewc_sweep']['lam']} "
             f"({result['ewc_sweep']['rule']}). Wall time {result.get('wall_s', 0):.0f} s; load before "
             f"`{result.get('load_before')}`, after `{result.get('load_after')}`. Chance = {result['chance']}.", "",
             "Mean ± std over seeds. Forgetting > 0 = forgot; BWT/FWT > 0 = better; plasticity = accuracy right after "
             "a modality's own stage − the single-modality model's (same seed). Losses are divided by the random "
             "encoder's (tfs) loss of the same seed.", "",
             "| row@order | linear final | linear forgetting | linear BWT | linear FWT | linear plasticity | "
             "kNN final | kNN forgetting | refit final (rel) | refit forgetting (rel) | stale pretext final (rel) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in result["table"].items():
        la, kn, rf, pt = row["linear_acc"], row["knn_acc"], row["refit_loss"], row["pretext_loss"]
        lines.append(f"| {key} | {_f(la['final_mean'])} | {_f(la['forgetting'])} | {_f(la['bwt'])} | "
                     f"{_f(la['fwt'])} | {_f(la.get('plasticity'))} | {_f(kn['final_mean'])} | "
                     f"{_f(kn['forgetting'])} | {_f(rf['final_mean'])} | {_f(rf['forgetting'])} | "
                     f"{_f(pt['final_mean'])} |")
    ceil = result["ceiling"]
    lines += ["", "## Final linear probe accuracy per modality (chance 0.25; ceiling = single-modality SSL)", "",
              "| row@order | report | xray | ct | mri |", "|---|---|---|---|---|",
              "| chance | " + " | ".join(f"{result['chance']:.2f}" for _ in range(4)) + " |",
              "| ceiling | " + " | ".join(_f(ceil[m]["linear_acc"]) for m in ("report", "xray", "ct", "mri")) + " |"]
    for key, row in result["table"].items():
        per = row["linear_acc"]["final_per"]
        lines.append(f"| {key} | " + " | ".join(_f(per.get(m)) for m in ("report", "xray", "ct", "mri")) + " |")
    if result.get("ablations_vs_rehearsal"):
        lines += ["", "## MedCoSS ablations − MedCoSS (forward order, seed-paired, 95 % t-intervals)", "",
                  "| ablation | Δ linear final | Δ kNN final | Δ refit final (rel) |", "|---|---|---|---|"]
        for row, d in result["ablations_vs_rehearsal"].items():
            lines.append(f"| {row} | {_ci(d['linear_acc'])} | {_ci(d['knn_acc'])} | {_ci(d['refit_loss'])} |")
    lines += ["", "## The paper's findings, tested (seed-paired differences, 95 % t-intervals)", ""]
    for f in result["findings"]:
        lines += [f"### {f['finding']}", "", f"**Verdict: {f['verdict']}.**", ""]
        if f["tests"]:
            lines += ["| test | difference [95 % CI] | outcome |", "|---|---|---|"]
            for t in f["tests"]:
                name = " / ".join(str(t[k]) for k in ("baseline", "modality", "metric") if k in t)
                lines.append(f"| {name} | {_ci(t.get('diff') or t.get('forgetting') or {})} | {t['outcome']} |")
            lines.append("")
    return "\n".join(lines) + "\n"
