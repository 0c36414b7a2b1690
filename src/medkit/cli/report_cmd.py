"""``medkit report`` (heat-maps, loss curves, a markdown summary of one run) and ``medkit compare``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import click

METRIC_TITLES = {"pretext_loss": "held-out pretext loss (lower is better)",
                 "knn_acc": "kNN probe accuracy", "linear_acc": "linear probe accuracy"}


# -- reading a run ------------------------------------------------------------------------------
def load_run(run_dir: Path) -> dict[str, Any]:
    """Config, manifest, matrices and step log of a run directory."""
    from medkit.eval.metrics import matrix_files
    from medkit.engine.engine import load_config
    from medkit.api.errors import CheckpointError
    from medkit.eval.evaluate import read_matrix_stages

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise CheckpointError(f"{run_dir} has no manifest.json: the run never checkpointed; run it "
                              f"(medkit run --run-dir {run_dir}) before reporting on it")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    matrices = {}
    for metric, path in matrix_files(run_dir).items():
        mods, stages, rows = read_matrix_stages(path)
        matrices[metric] = {"modalities": mods, "stages": stages, "rows": rows}
    from medkit.storage.jsonl import read_jsonl

    steps = read_jsonl(run_dir / "metrics" / "steps.jsonl")  # a torn last line is dropped, with a warning
    return {"dir": run_dir, "config": cfg, "manifest": manifest, "matrices": matrices, "steps": steps,
            "strategy": cfg["run"]["strategy"]}


def row_labels(stages: Sequence[Sequence[str]]) -> list[str]:
    return [f"after stage {i + 1} ({'+'.join(mods)})" for i, mods in enumerate(stages)]


def fmt_value(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals (no ``-0.0000``), or ``–`` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value + 0.0 if abs(value) >= 0.5 * 10 ** -digits else 0.0:.{digits}f}"


# -- figures ------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_matrix(path: Path, metric: str, matrix: dict[str, Any]) -> None:
    """An annotated heat-map: rows "after stage i (modality)", columns modalities."""
    import numpy as np

    from medkit.eval.metrics import HIGHER_IS_BETTER

    mods, rows = matrix["modalities"], matrix["rows"]
    data = np.array([[np.nan if v is None else v for v in r] for r in rows],
                    dtype=float).reshape(len(rows), len(mods))  # [stages, modalities]
    labels = row_labels(matrix["stages"])
    fig = _figure(1.8 + 0.075 * max([len(x) for x in labels], default=10) + 1.1 * len(mods), 1.6 + 0.5 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    cmap = "viridis" if HIGHER_IS_BETTER.get(metric, True) else "viridis_r"
    finite = data[np.isfinite(data)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-9,
                      aspect="auto")
    mid = (vmin + vmax) / 2
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                dark = (data[i, j] < mid) == HIGHER_IS_BETTER.get(metric, True)
                decimals = 3 if abs(data[i, j]) < 100 else 1
                ax.text(j, i, f"{data[i, j]:.{decimals}f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    ax.set_xticks(range(len(mods)), mods)
    ax.set_yticks(range(len(rows)), labels)
    ax.set_xlabel("evaluated modality")
    ax.set_title(METRIC_TITLES.get(metric, metric), fontsize=10)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.formatter.set_useOffset(False)
    bar.update_ticks()
    fig.tight_layout()
    fig.savefig(path)


def plot_losses(path: Path, steps: Sequence[dict[str, Any]], *, window: int = 5) -> dict[str, str]:
    """Training loss over all steps (stages laid end to end), one colour per modality, solid for
    the current stage's data and dashed for rehearsed (buffer) data; grey lines mark stage ends.
    Returns the line style of each series (``{"ct (buffer)": "--"}``)."""
    fig = _figure(9.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    last_step: dict[int, int] = {}
    for r in steps:
        last_step[r["stage"]] = max(last_step.get(r["stage"], 0), int(r["step"]))
    offset, total = {}, 0
    for stage in sorted(last_step):
        offset[stage] = total
        total += last_step[stage]
    series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for r in steps:
        xs, ys = series.setdefault((r["modality"], r.get("role", "current")), ([], []))
        xs.append(offset[r["stage"]] + int(r["step"]))
        ys.append(float(r["loss"]))
    mods = sorted({m for m, _ in series})
    colours = {m: f"C{k % 10}" for k, m in enumerate(mods)}
    styles = {}
    for (m, role), (xs, ys) in sorted(series.items()):
        smooth = [sum(ys[max(0, k - window + 1):k + 1]) / len(ys[max(0, k - window + 1):k + 1])
                  for k in range(len(ys))]
        styles[f"{m} ({role})"] = "-" if role == "current" else "--"
        ax.plot(xs, smooth, color=colours[m], linestyle=styles[f"{m} ({role})"], linewidth=1.2,
                label=f"{m} ({role})")
    for stage in sorted(offset)[1:]:
        ax.axvline(offset[stage] + 0.5, color="0.7", linewidth=0.8)
    ax.set_xlabel("optimizer step (all stages)")
    ax.set_ylabel(f"training loss (moving mean of {window})")
    ax.set_title("training loss per modality (dashed: rehearsal buffer)")
    if series:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    return styles


# -- markdown -----------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def matrix_markdown(matrix: dict[str, Any]) -> str:
    labels = row_labels(matrix["stages"])
    rows = [[label, *[fmt_value(v) for v in r]] for label, r in zip(labels, matrix["rows"])]
    return markdown_table(["", *matrix["modalities"]], rows)


def metrics_markdown(cl: dict[str, Any]) -> str:
    rows, notes = [], []
    for metric, m in cl.items():
        values = (m.final_mean, m.forgetting_first, m.forgetting_max, m.bwt, m.fwt)
        rows.append([metric, "higher" if m.higher_is_better else "lower", *[fmt_value(v) for v in values]])
        notes += [f"- {metric} {k}: {v}" for k, v in m.reasons.items()]
        if m.fwt_baseline:
            notes.append(f"- {metric} FWT baseline: {m.fwt_baseline}")
    table = markdown_table(["metric", "better", "final mean", "forgetting (first)", "forgetting (max)",
                            "BWT", "FWT"], rows)
    return table + ("\n\n" + "\n".join(notes) if notes else "")


def write_report(run_dir: Path, *, baseline: Path | None = None) -> Path:
    """Write ``RUN_DIR/report/``: one heat-map per matrix, loss curves and ``report.md``."""
    from medkit.eval.metrics import run_metrics

    run = load_run(run_dir)
    out = Path(run_dir) / "report"
    out.mkdir(exist_ok=True)
    cl = run_metrics(Path(run_dir), baseline_run=baseline)
    cfg, manifest = run["config"], run["manifest"]
    enc = cfg.get("encoder", {})
    summary = [["strategy", run["strategy"]], ["modalities", ", ".join(cfg["run"]["modalities"])],
               ["preset", str(enc.get("preset", "–"))],
               ["encoder", f"depth {enc.get('depth', '–')}, width {enc.get('embed_dim', '–')}"],
               ["steps per stage", str(cfg["trainer"].get("max_steps"))],
               ["batch size", str(cfg["trainer"].get("batch_size"))], ["seed", str(cfg["run"].get("seed"))],
               ["strategy options", ", ".join(f"{k}={v}" for k, v in sorted(cfg.get("strategy", {}).items())) or "–"],
               ["finished", str(manifest.get("finished"))]]
    parts = [f"# medkit run report: {Path(run_dir).name}", "", "## Configuration", "",
             markdown_table(["key", "value"], summary), "", "## Stages", "",
             markdown_table(["stage", "modalities", "status", "steps"],
                            [[str(s["index"]), "+".join(s["modalities"]), s["status"], str(s["steps"])]
                             for s in manifest.get("stages", [])]), ""]
    for metric, matrix in run["matrices"].items():
        png = f"matrix_{metric}.png"
        plot_matrix(out / png, metric, matrix)
        parts += [f"## {METRIC_TITLES.get(metric, metric)}", "", matrix_markdown(matrix), "",
                  f"![{metric}]({png})", ""]
    if run["steps"]:
        plot_losses(out / "loss_curves.png", run["steps"])
        parts += ["## Training loss", "", "![loss curves](loss_curves.png)", ""]
    parts += ["## Continual-learning metrics", "",
              "Forgetting > 0 means worse than right after the modality's own stage; BWT/FWT > 0 "
              "means better (signs are flipped for the loss). Definitions: docs/continual-metrics.md.",
              "", metrics_markdown(cl), ""]
    (out / "report.md").write_text("\n".join(parts), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps({k: v.to_dict() for k, v in cl.items()}, indent=2) + "\n",
                                      encoding="utf-8")
    return out


# -- compare ------------------------------------------------------------------------------------
def compare_runs(run_dirs: Sequence[Path], *, baseline: Path | None = None) -> dict[str, Any]:
    """Per-run summary for ``medkit compare``: final values, forgetting, BWT, FWT per metric.
    Without ``baseline``, the first ``tfs`` run among ``run_dirs`` (if any) provides ``b_j``."""
    from medkit.eval.metrics import run_metrics

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
    return {"baseline": None if baseline is None else str(baseline), "runs": out}


def compare_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table."""
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
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--baseline", type=click.Path(file_okay=False, exists=True), default=None,
              help="An untrained run (strategy tfs, same modalities) whose values are FWT's b_j.")
def report(run_dir: str, baseline: str | None) -> None:
    """Write RUN_DIR/report/: heat-maps of the stage × modality matrices, loss curves and report.md
    with forgetting, BWT and FWT.

    \b
    Example:
      medkit report runs/my-run
    """
    out = write_report(Path(run_dir), baseline=Path(baseline) if baseline else None)
    click.echo(f"report: {out / 'report.md'}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--baseline", type=click.Path(file_okay=False, exists=True), default=None,
              help="Untrained run for FWT's b_j (default: a tfs run among RUN_DIRS, if any).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Also write the comparison to FILE (.md: the table; .json: every metric).")
def compare(run_dirs: tuple[str, ...], baseline: str | None, out: str | None) -> None:
    """Compare runs side by side: final pretext loss per modality, forgetting (first- and
    max-value), BWT, FWT and probe accuracies.

    \b
    Example:
      medkit compare runs/seq runs/rehearsal runs/tfs --out compare.md
    """
    from medkit.api.errors import ConfigError

    if out and Path(out).suffix not in (".md", ".json"):
        raise ConfigError(f"--out {out}: expected a .md or .json file name")
    result = compare_runs([Path(d) for d in run_dirs], baseline=Path(baseline) if baseline else None)
    header, rows = compare_table(result)
    click.echo(text_table(header, rows))
    if out:
        path = Path(out)
        if path.suffix == ".json":
            path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        else:
            note = f"\n\nFWT baseline: {result['baseline'] or 'none (b_j omitted)'}\n"
            path.write_text(markdown_table(header, rows) + note, encoding="utf-8")
        click.echo(f"wrote {path}")
