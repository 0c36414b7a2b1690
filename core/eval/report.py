"""The report of one run (``medkit report``): a text summary of what changed, heat maps, loss curves,
``report.md`` and ``metrics.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from medkit.api.errors import CheckpointError
from medkit.eval.matrices import NOT_AVAILABLE as NA, Matrix, fmt_value, matrix_markdown, run_matrices
from medkit.eval.metric_info import metric_info
from medkit.eval.metrics import CLMetrics, own_stages, run_metrics, run_objectives
from medkit.eval.records import read_evaluations, write_json

REPORT_DIR = "report"


def load_run(run_dir: Path) -> dict[str, Any]:
    """Config, architecture, manifest, matrices, evaluation records and step log of a run directory."""
    from medkit.config.received import received_config

    run_dir = Path(run_dir)
    cfg = received_config(run_dir)  # through the gate every received file passes
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise CheckpointError(f"{run_dir} has no manifest.json: the run never checkpointed; run it "
                              f"(medkit run --run-dir {run_dir}) before reporting on it")
    from medkit.config.received import received_architecture, received_manifest

    manifest = received_manifest(manifest_path)
    arch_path = run_dir / "config.json"
    arch = received_architecture(arch_path) if arch_path.is_file() else {}
    from medkit.storage.jsonl import read_jsonl

    steps = read_jsonl(run_dir / "metrics" / "steps.jsonl")  # a torn last line is dropped, with a warning
    return {"dir": run_dir, "config": cfg, "arch": arch, "manifest": manifest, "matrices": run_matrices(run_dir),
            "evaluations": read_evaluations(run_dir / "metrics" / "eval.json"), "steps": steps,
            "objectives": run_objectives(run_dir), "strategy": cfg["run"]["strategy"]}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def unavailable_notes(evaluations: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    """``- ct, after stage 2–3: reason`` for every cell of ``metric`` that could not be evaluated."""
    found: dict[tuple[str, str], list[int]] = {}
    for r in evaluations:
        for m, reason in r.get("unavailable", {}).get(metric, {}).items():
            found.setdefault((m, reason), []).append(int(r["after_stage"]))
    out = []
    for (m, reason), stages in found.items():
        span = f"{stages[0]}" if len(stages) == 1 else f"{stages[0]}–{stages[-1]}"
        out.append(f"- {NA} {m}, after stage {span}: {reason}")
    return out



def change_summary(run: Mapping[str, Any], cl: Mapping[str, CLMetrics]) -> list[str]:
    """A few lines saying what changed: for every metric and modality, its value right after its own
    stage, its final value and the difference (worse / better / unchanged)."""
    manifest = run["manifest"]
    stages = [s for s in manifest.get("stages", []) if s.get("status") == "done"]
    arrow = " → ".join("+".join(s["modalities"]) for s in stages) or "no finished stage"
    lines = [f"{run['strategy']} run {Path(run['dir']).name}: {len(stages)} finished stage(s), {arrow}"
             + ("" if manifest.get("finished") else " (not finished)")]
    for metric, matrix in run["matrices"].items():
        info = metric_info(metric)
        if not matrix.rows:
            continue
        own = own_stages(matrix.modalities, matrix.stages)
        parts = []
        for j, m in enumerate(matrix.modalities):
            final = matrix.rows[-1][j]
            if m not in own:
                continue
            start = matrix.rows[own[m]][j]
            if own[m] == len(matrix.rows) - 1:
                parts.append(f"{m} {fmt_value(final)} (trained last)" if final is not None else f"{m} {NA}")
            elif start is None or final is None:
                parts.append(f"{m} {NA}")
            else:
                delta = final - start
                good = delta > 0 if info.higher_is_better else delta < 0
                word = "unchanged" if delta == 0 else ("better" if good else "worse")
                d = next((k for k in range(4, 7) if round(start, k) != round(final, k)), 6 if delta else 4)
                parts.append(f"{m} {fmt_value(start, d)} → {fmt_value(final, d)} ({delta:+.{d}f}, {word})")
        if parts:
            lines.append(f"{info.title} ({info.better}): " + "; ".join(parts))
    skipped = sorted({m for r in run["evaluations"] for per in r.get("unavailable", {}).values() for m in per})
    if skipped:
        lines.append(f"{NA} (could not be evaluated, see report.md): " + ", ".join(skipped))
    return lines


def encoder_line(run: Mapping[str, Any]) -> str:
    """``depth 12, width 768, 12 heads`` from the resolved architecture (never ``None``)."""
    trunk = dict(run["arch"].get("trunk") or {})
    enc = run["config"].get("encoder", {})
    depth = trunk.get("depth", enc.get("depth"))
    width = trunk.get("embed_dim", enc.get("embed_dim"))
    heads = trunk.get("num_heads", enc.get("num_heads"))
    if depth is None and width is None:
        return f"the {enc.get('preset', '?')} preset's defaults"
    return f"depth {depth}, width {width}" + (f", {heads} heads" if heads is not None else "")


def metrics_markdown(cl: Mapping[str, CLMetrics]) -> str:
    """The continual-learning table (means where the columns share a unit) and the per-modality
    forgetting of every metric, with the reasons of what is undefined."""
    rows, notes, per = [], [], []
    for metric, m in cl.items():
        values = (m.final_mean, m.forgetting_first, m.forgetting_max, m.bwt, m.fwt)
        rows.append([metric, "higher" if m.higher_is_better else "lower", *[fmt_value(v) for v in values]])
        notes += [f"- {metric} {k}: {v}" for k, v in m.reasons.items()]
        notes += [f"- {metric}: {mod} excluded ({why})" for mod, why in m.excluded.items()]
        if m.fwt_baseline:
            notes.append(f"- {metric} FWT baseline: {m.fwt_baseline}")
        for mod in m.final:
            per.append([metric, mod, m.units.get(mod, ""), fmt_value(m.final.get(mod)),
                        fmt_value(m.forgetting_first_per.get(mod)), fmt_value(m.forgetting_max_per.get(mod)),
                        fmt_value(m.fwt_per.get(mod)), fmt_value(m.chance.get(mod), 2)])
    table = markdown_table(["metric", "better", "final mean", "forgetting (first)", "forgetting (max)",
                            "BWT", "FWT"], rows)
    per_table = markdown_table(["metric", "modality", "unit", "final", "forgetting (first)", "forgetting (max)",
                                "FWT term", "chance (final)"], per)
    return (table + "\n\nPer modality:\n\n" + per_table
            + ("\n\n" + "\n".join(notes) if notes else ""))


def _chance_label(matrix: Matrix) -> str:
    """What a probe cell's ``(n=..., chance ...)`` means, where the matrix records chance levels."""
    if not any(c is not None for row in matrix.chance for c in row):
        return ""
    return (" `n`: held-out queries; `chance`: the chance level, their majority-class rate (the accuracy "
            "of always answering the commonest class), which the probe must beat to show anything.")


def _config_table(run: Mapping[str, Any]) -> str:
    cfg, manifest = run["config"], run["manifest"]
    enc = cfg.get("encoder", {})
    origin = manifest.get("from") or {}
    summary = [["strategy", run["strategy"]], ["modalities", ", ".join(cfg["run"]["modalities"])],
               ["preset", str(enc.get("preset", "–"))], ["encoder", encoder_line(run)],
               ["objectives", ", ".join(f"{m}: {o}" for m, o in (run["objectives"] or {}).items()) or "–"],
               ["steps per stage", str(cfg["trainer"].get("max_steps"))],
               ["batch size", str(cfg["trainer"].get("batch_size"))], ["seed", str(cfg["run"].get("seed"))],
               ["strategy options", ", ".join(f"{k}={v}" for k, v in sorted(cfg.get("strategy", {}).items())) or "–"],
               ["continued from", str(origin.get("ref") or "–")], ["finished", str(manifest.get("finished"))]]
    return markdown_table(["key", "value"], summary)


def write_report(run_dir: Path, *, baseline: Path | None = None, components: Any | None = None) -> Path:
    """Write ``RUN_DIR/report/``: one heat map per matrix, loss curves, ``report.md`` (opening with
    :func:`change_summary`) and ``metrics.json`` (strict JSON); with ``components`` (the plugin
    host), also a preview of what the model was fed for every modality it trained on
    (:func:`medkit.eval.preview.run_previews`). A run directory that cannot be written is a
    :class:`CheckpointError` naming it and the fix."""
    run = load_run(run_dir)
    out = Path(run_dir) / REPORT_DIR
    try:
        return _write_report(run, out, Path(run_dir), baseline, components)
    except OSError as exc:  # a read-only run directory (a received run, a shared or mounted copy)
        import errno

        name = errno.errorcode.get(exc.errno or 0, "")
        raise CheckpointError(f"cannot write the report of {run_dir} into {out}: {exc.strerror or exc}"
                              f"{f' ({name})' if name else ''}; the run directory is not writable: copy it "
                              f"(cp -r {run_dir} COPY; medkit report COPY) or make it writable, then try "
                              f"again") from exc


def _write_report(run: dict[str, Any], out: Path, run_dir: Path, baseline: Path | None,
                  components: Any | None = None) -> Path:
    from medkit.eval.plots import heatmap_png, loss_curves_png

    out.mkdir(exist_ok=True)
    cl = run_metrics(Path(run_dir), baseline_run=baseline)
    summary = change_summary(run, cl)
    parts = [f"# medkit run report: {Path(run_dir).name}", "", "## What changed", "",
             *[f"- {line}" for line in summary], "", "## Configuration", "", _config_table(run), "",
             "## Stages", "",
             markdown_table(["stage", "modalities", "status", "steps"],
                            [[str(s["index"]), "+".join(s["modalities"]), s["status"], str(s["steps"])]
                             for s in run["manifest"].get("stages", [])]), ""]
    matrix: Matrix
    for metric, matrix in run["matrices"].items():
        info = metric_info(metric)
        png = f"matrix_{metric}.png"
        heatmap_png(out / png, matrix, objectives=run["objectives"])
        units = cl[metric].units if metric in cl else {}
        parts += [f"## {info.title} ({info.better})", "", f"Measured on the {info.split}; unit: "
                  + ("; ".join(f"{m}: {u}" for m, u in units.items()) if info.per_objective else info.unit)
                  + f". `–`: not evaluated at that stage; `{NA}`: could not be evaluated." + _chance_label(matrix), "",
                  matrix_markdown(matrix), "", *unavailable_notes(run["evaluations"], metric), "",
                  f"![{metric}]({png})", ""]
    if run["steps"]:
        loss_curves_png(out / "loss_curves.png", run["steps"], objectives=run["objectives"])
        parts += ["## Training loss", "", "Losses of the training batches (each modality's own objective).",
                  "", "![loss curves](loss_curves.png)", ""]
    if components is not None:
        parts += _preview_section(run, out, components)
    parts += ["## Continual-learning metrics", "",
              "Forgetting > 0 means worse than right after the modality's own stage; BWT/FWT > 0 "
              "means better (signs are flipped for the loss). Means over modalities are only given "
              "where the modalities share a unit. Definitions: docs/continual-metrics.md.",
              "", metrics_markdown(cl), ""]
    (out / "report.md").write_text("\n".join(parts), encoding="utf-8")
    write_json(out / "metrics.json", {k: v.to_dict() for k, v in cl.items()})
    (out / "summary.txt").write_text("\n".join(summary) + "\n", encoding="utf-8")
    return out


def _preview_section(run: Mapping[str, Any], out: Path, components: Any) -> list[str]:
    """``## What the model was fed``: one preview per modality the run trained on."""
    from medkit.eval.preview import run_previews

    made = run_previews(run["config"], run["manifest"], out, components)
    if not made:
        return []
    lines = ["## What the model was fed", "", "Samples of each modality the run trained on, read from the "
             "folder it trained on with its options: as read, preprocessed and augmented (`medkit data "
             "preview` draws the same for any folder).", ""]
    for m, png, why in made:
        lines += [f"![{m} preview]({png})", ""] if png else [f"- {m}: no preview ({why})", ""]
    return lines
