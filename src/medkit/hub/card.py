"""The ``README.md`` model card of a pushed run: Hub metadata, architecture, the stage matrices and
their heat map."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from medkit.api.errors import ConfigError

log = logging.getLogger(__name__)

#: Licence identifiers the Hugging Face Hub accepts in a card's ``license`` field
#: (https://huggingface.co/docs/hub/repositories-licenses); anything else is ``other``.
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear
c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0
cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0
cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl
ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0
odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3
llama4 gemma unknown other
""".split())
BASE_TAGS = ("medkit", "medical-imaging", "self-supervised", "continual-pretraining")
#: Metric names containing one of these are drawn and described as "lower is better".
LOWER_IS_BETTER = ("loss", "error", "perplexity")


def check_license(license: str) -> str:
    """A Hub licence identifier, or a :class:`ConfigError` that lists how to fix it."""
    value = license.strip().lower()
    if value not in HUB_LICENSES:
        import difflib

        close = difflib.get_close_matches(value, sorted(HUB_LICENSES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"--license {license!r} is not a Hugging Face Hub licence identifier; {hint}use "
                          f"one of https://huggingface.co/docs/hub/repositories-licenses or 'other'")
    return value


# -- matrices --------------------------------------------------------------------------------
def metric_of(csv_path: Path) -> str:
    """``matrix.csv`` → ``pretext_loss``; ``matrix_<metric>.csv`` → ``<metric>``."""
    from medkit.eval.evaluate import MATRIX_FILES

    for metric, name in MATRIX_FILES.items():
        if csv_path.name == name:
            return metric
    stem = csv_path.stem
    return stem[len("matrix_"):] if stem.startswith("matrix_") else stem


def matrix_files(run_dir: Path) -> list[Path]:
    """The run's matrix CSVs, the primary ``matrix.csv`` first."""
    metrics = Path(run_dir) / "metrics"
    found = sorted(metrics.glob("matrix*.csv")) if metrics.is_dir() else []
    return sorted(found, key=lambda p: (p.name != "matrix.csv", p.name))


def read_matrix_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a matrix CSV as strings (``after_stage, stage_modalities, <modalities>``)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if not rows or len(rows[0]) < 3 or rows[0][:2] != ["after_stage", "stage_modalities"]:
        raise ConfigError(f"{path} is not a medkit stage matrix (expected the columns after_stage, "
                          f"stage_modalities, <modalities>)")
    return rows[0], rows[1:]


def _fmt(value: str) -> str:
    if value == "":
        return "–"
    try:
        number = float(value)
    except ValueError:
        return value
    if math.isnan(number):
        return "nan"
    return f"{number:.4f}" if abs(number) < 1e4 else f"{number:.4g}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def matrix_markdown(path: Path) -> str:
    """A matrix CSV as a markdown table: one row per finished stage, one column per modality."""
    header, rows = read_matrix_table(path)
    mods = header[2:]
    lines = ["| after stage | trained on | " + " | ".join(_cell(m) for m in mods) + " |",
             "|---|---|" + "---:|" * len(mods)]
    for row in rows:
        row = row + [""] * (len(header) - len(row))
        lines.append(f"| {_cell(row[0])} | {_cell(row[1])} | "
                     + " | ".join(_fmt(v) for v in row[2:len(header)]) + " |")
    return "\n".join(lines)


def render_heatmap(csv_path: Path, out: Path) -> Path:
    """Draw the matrix as an annotated heat map PNG (matplotlib's Agg canvas, no pyplot state)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    header, rows = read_matrix_table(csv_path)
    mods = header[2:]
    values = np.full((len(rows), len(mods)), np.nan)  # [stages, modalities]
    for i, row in enumerate(rows):
        for j, v in enumerate(row[2:2 + len(mods)]):
            if v != "":
                values[i, j] = float(v)
    metric = metric_of(csv_path)
    fig = Figure(figsize=(2.4 + 1.4 * max(len(mods), 1), 1.6 + 0.6 * max(len(rows), 1)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = "viridis_r" if any(k in metric for k in LOWER_IS_BETTER) else "viridis"
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    finite = values[np.isfinite(values)]
    middle = float(finite.mean()) if finite.size else 0.0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, _fmt(str(values[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if (values[i, j] > middle) == (cmap == "viridis_r") else "black")
    ax.set_xticks(range(len(mods)), labels=mods, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=[f"after {r[0]} ({r[1]})" for r in rows])
    ax.set_xlabel("evaluated modality")
    ax.set_title(metric.replace("_", " "))
    bar = fig.colorbar(image, ax=ax)
    bar.formatter.set_useOffset(False)
    bar.update_ticks()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def existing_heatmap(run_dir: Path) -> Path | None:
    """A heat map the run already has (``matrix.png`` at the top, in ``metrics/`` or ``plots/``, or the
    pretext-loss map ``medkit report`` writes)."""
    for rel in ("matrix.png", "metrics/matrix.png", "plots/matrix.png", "report/matrix_pretext_loss.png"):
        if (Path(run_dir) / rel).is_file():
            return Path(run_dir) / rel
    return None


# -- the card ----------------------------------------------------------------------------------
def card_metadata(*, arch: dict[str, Any], manifest: dict[str, Any], license: str) -> dict[str, Any]:
    """The YAML front matter: library, licence, tags, and what the run trained on."""
    modalities = [str(m) for m in manifest.get("modalities") or list(arch.get("uses", {}))]
    strategy = str(manifest.get("strategy", "unknown"))
    tags = list(dict.fromkeys([*BASE_TAGS, *modalities, strategy]))
    stages = [[str(m) for m in s.get("modalities", [])] for s in manifest.get("stages", [])
              if s.get("status") == "done"]
    trunk = arch.get("trunk", {})
    return {
        "library_name": "medkit",
        "license": check_license(license),
        "tags": tags,
        "pipeline_tag": "feature-extraction",
        "medkit": {
            "format": int(arch.get("format", 1)),
            "strategy": strategy,
            "modalities": modalities,
            "stages": stages,
            "tokenizers": sorted({u["tokenizer"] for u in arch.get("uses", {}).values()}),
            "objectives": sorted({u["objective"] for u in arch.get("uses", {}).values()}),
            "encoder": {k: trunk[k] for k in ("depth", "embed_dim", "num_heads", "mlp_ratio") if k in trunk},
        },
    }


def _providers(arch: dict[str, Any]) -> list[str]:
    """Distributions that provide the tokenizers and objectives the checkpoint names."""
    from medkit.registry.known import provider_of

    dists: list[str] = ["medkit"]
    for use in arch.get("uses", {}).values():
        for kind in ("tokenizer", "objective"):
            name = use[kind]
            dist = None
            try:
                from medkit.registry import get_host

                dist = get_host().provider(kind, name).dist
            except Exception:  # noqa: BLE001 - not installed here: fall back to the known table
                dist = provider_of(kind, name)
            if dist and dist not in dists:
                dists.append(dist)
    return dists


def render_card(*, repo_id: str, arch: dict[str, Any], manifest: dict[str, Any], license: str,
                matrices: Sequence[Path], heatmap: str | None, strategy_files: Sequence[str]) -> str:
    """The full ``README.md`` text (YAML front matter + markdown body)."""
    import yaml

    meta = card_metadata(arch=arch, manifest=manifest, license=license)
    info = meta["medkit"]
    trunk = arch.get("trunk", {})
    stages = [s for s in manifest.get("stages", []) if s.get("status") == "done"]
    arrow = " → ".join("+".join(s["modalities"]) for s in stages) or "no finished stage"
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A universal medical encoder continually pre-trained with [medkit](https://pypi.org/project/medkit/) "
        f"(MedCoSS-style continual self-supervised pre-training): {len(stages)} stage(s), {arrow}, "
        f"continual strategy `{info['strategy']}`.",
        "",
        "## Model",
        "",
        "| trunk | depth | width | heads | MLP ratio |",
        "|---|---:|---:|---:|---:|",
        f"| ViT ({arch.get('encoder', {}).get('preset', '?')}) | {trunk.get('depth', '?')} | "
        f"{trunk.get('embed_dim', '?')} | {trunk.get('num_heads', '?')} | {trunk.get('mlp_ratio', '?')} |",
        "",
        "| modality | tokenizer | pretext objective |",
        "|---|---|---|",
        *[f"| {_cell(m)} | `{u['tokenizer']}` | `{u['objective']}` |" for m, u in arch.get("uses", {}).items()],
        "",
        "`model.safetensors` holds the encoder (`encoder.*`, tokenizers under `encoder.tokenizers.<name>.*`) "
        "and one pretext head per modality (`heads.<modality>.*`); `config.json` is all that is needed to "
        "rebuild them, through medkit's plugin registry (no code is imported from the repository).",
        "",
        "## Usage",
        "",
        "```bash",
        f"pip install {' '.join(_providers(arch))}",
        f"medkit pull hf-hub:{repo_id}",
        "```",
        "",
        "```python",
        "from medkit.hub.hub import load_pretrained",
        "",
        f'model = load_pretrained("hf-hub:{repo_id}")  # encoder + pretext heads, in eval mode',
        "encoder = model.encoder",
        "```",
        "",
        f"Continue pre-training on new data with `medkit run --from hf-hub:{repo_id} --modality <new>`.",
        "",
        "## Training",
        "",
        "| stage | modalities | optimizer steps |",
        "|---:|---|---:|",
        *[f"| {s.get('index', i + 1)} | {_cell('+'.join(s['modalities']))} | {s.get('steps', '?')} |"
          for i, s in enumerate(stages)],
        "",
        f"Strategy `{info['strategy']}`, seed {manifest.get('seed', '?')}, "
        f"{manifest.get('world_size', 1)} process(es).",
        "",
        "## Results",
        "",
    ]
    if not matrices:
        lines += ["This run has no evaluation matrix.", ""]
    for path in matrices:
        metric = metric_of(path)
        better = "lower is better" if any(k in metric for k in LOWER_IS_BETTER) else "higher is better"
        lines += [f"**{metric.replace('_', ' ')}** on held-out data of every modality seen so far, after "
                  f"each stage ({better}):", "", matrix_markdown(path), ""]
    if heatmap:
        lines += [f"![{metric_of(matrices[0]) if matrices else 'matrix'} heat map]({heatmap})", ""]
    lines += [
        "## Data and privacy",
        "",
        "This repository holds weights and configuration only: no training samples, sample ids, "
        "rehearsal buffers, cached features, Fisher information or local data paths (they are removed "
        "from `manifest.json` and `config.yaml` before upload).",
        "",
    ]
    if strategy_files:
        lines += ["`strategy/` holds the part of the continual strategy's state that derives from no "
                  "sample (e.g. teacher weights, PackNet masks): " + ", ".join(f"`{f}`" for f in strategy_files)
                  + ".", ""]
    versions = manifest.get("versions", {})
    if versions:
        lines += ["## Versions", "", "| package | version |", "|---|---|",
                  *[f"| {_cell(k)} | {_cell(v)} |" for k, v in sorted(versions.items())], ""]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(lines)
