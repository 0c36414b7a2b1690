"""The ``README.md`` model card of a pushed run, built with ``huggingface_hub``'s ``ModelCardData`` /
``EvalResult``: metadata (licence, tags, ``base_model`` lineage, ``model-index`` results from the
stage matrices), architecture, install line, the matrices and their heat map."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from medkit.api.errors import ConfigError
from medkit.eval.matrices import NOT_AVAILABLE, Matrix, matrix_markdown
from medkit.eval.metric_info import column_units, metric_info

log = logging.getLogger(__name__)

#: Licence identifiers the Hugging Face Hub accepts in a card's ``license`` field
#: (https://huggingface.co/docs/hub/repositories-licenses); anything else is ``other``. The offline
#: check; on push the Hub validates the card's metadata itself (huggingface_hub's commit).
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
HUB_PREFIX = "hf-hub:"
#: ``provider(kind, name)`` → the distribution that provides a component (``None``: unknown).
Provider = Callable[[str, str], "str | None"]


def check_license(license: str | None) -> str | None:
    """A Hub licence identifier (``None``: the publisher chose none), or a :class:`ConfigError` that
    lists how to fix it."""
    if license is None:
        return None
    value = license.strip().lower()
    if value not in HUB_LICENSES:
        import difflib

        close = difflib.get_close_matches(value, sorted(HUB_LICENSES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"--license {license!r} is not a Hugging Face Hub licence identifier; {hint}use "
                          f"one of https://huggingface.co/docs/hub/repositories-licenses or 'other'")
    return value


def base_model_of(manifest: Mapping[str, Any]) -> str | None:
    """The Hub repository a ``--from`` run continued (``hf-hub:USER/NAME@REV`` → ``USER/NAME``)."""
    ref = str((manifest.get("from") or {}).get("ref") or "")
    if not ref.startswith(HUB_PREFIX):
        return None
    return ref[len(HUB_PREFIX):].split("@", 1)[0] or None


def objectives_of(arch: Mapping[str, Any]) -> dict[str, str]:
    return {m: str(u["objective"]) for m, u in (arch.get("uses") or {}).items() if u.get("objective")}


def required_distributions(arch: Mapping[str, Any], provider: Provider | None,
                           kinds: Sequence[tuple[str, Sequence[str]]] | None = None) -> list[str]:
    """``medkit`` and the plugin distributions providing the checkpoint's components, in order."""
    uses = (arch.get("uses") or {}).values()
    kinds = kinds or [("tokenizer", sorted({u["tokenizer"] for u in uses})),
                      ("objective", sorted({u["objective"] for u in uses}))]
    dists = ["medkit"]
    for kind, names in kinds:
        for name in names:
            dist = provider(kind, name) if provider is not None else None
            if dist and dist not in dists:
                dists.append(dist)
    return dists


def eval_results(matrices: Mapping[str, Matrix], *, objectives: Mapping[str, str]) -> list[Any]:
    """``model-index`` entries: the last row of every matrix (the published weights), one per
    (metric, modality) with a finite value, on that modality's held-out split."""
    from huggingface_hub import EvalResult

    out = []
    for metric, matrix in matrices.items():
        if not matrix.rows:
            continue
        info = metric_info(metric)
        units = column_units(metric, matrix.modalities, objectives)
        for m, value in zip(matrix.modalities, matrix.rows[-1]):
            if value is None:
                continue
            out.append(EvalResult(
                task_type="feature-extraction", task_name="continual self-supervised pre-training",
                dataset_type=f"{m}-held-out", dataset_name=f"{m} (held-out split of the training data)",
                dataset_split="held-out", metric_type=metric,
                metric_name=f"{info.title}: {units[m]}, {info.better}", metric_value=round(float(value), 6),
                metric_config=f"after stage {matrix.after[-1]}"))
    return out


def card_metadata(*, arch: Mapping[str, Any], manifest: Mapping[str, Any], license: str | None,
                  matrices: Mapping[str, Matrix] | None = None, repo_id: str | None = None) -> Any:
    """The card's ``huggingface_hub.ModelCardData``: library, licence, tags, ``base_model``,
    ``model-index`` (with ``matrices`` and ``repo_id``) and a ``medkit`` section (what the run trained)."""
    from huggingface_hub import ModelCardData

    modalities = [str(m) for m in manifest.get("modalities") or list(arch.get("uses", {}))]
    strategy = str(manifest.get("strategy", "unknown"))
    stages = [[str(m) for m in s.get("modalities", [])] for s in manifest.get("stages", [])
              if s.get("status") == "done"]
    trunk = arch.get("trunk", {})
    results = eval_results(matrices or {}, objectives=objectives_of(arch)) if repo_id else []
    return ModelCardData(
        library_name="medkit", license=check_license(license),
        tags=list(dict.fromkeys([*BASE_TAGS, *modalities, strategy])),
        pipeline_tag="feature-extraction", base_model=base_model_of(manifest),
        model_name=repo_id.split("/")[-1] if repo_id and results else None, eval_results=results or None,
        medkit={"format": int(arch.get("format", 1)), "strategy": strategy, "modalities": modalities,
                "stages": stages,
                "tokenizers": sorted({u["tokenizer"] for u in arch.get("uses", {}).values()}),
                "objectives": sorted({u["objective"] for u in arch.get("uses", {}).values()}),
                "encoder": {k: trunk[k] for k in ("depth", "embed_dim", "num_heads", "mlp_ratio") if k in trunk}})


def render_heatmap(matrices: Mapping[str, Matrix], out: Path, *, objectives: Mapping[str, str] | None = None) -> Path:
    """Every matrix in one PNG, one panel per metric, the report's fixed change scale (:mod:`medkit.eval.plots`)."""
    from medkit.eval.plots import heatmap_png

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return heatmap_png(out, list(matrices.values()), objectives=objectives)


def _shared_note(arch: Mapping[str, Any]) -> str:
    """Which modalities share another's pretext head (``config.json``'s ``shared_heads``), in words."""
    shared = arch.get("shared_heads") or {}
    return "".join(f"; {_cell(a)} shares the head of {_cell(o)}" for a, o in shared.items())


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _usage(repo_id: str, arch: Mapping[str, Any], manifest: Mapping[str, Any], provider: Provider | None) -> list[str]:
    load = required_distributions(arch, provider)
    modalities = [str(m) for m in manifest.get("modalities") or list(arch.get("uses", {}))]
    more = [d for d in required_distributions(arch, provider, [("modality", modalities)]) if d not in load]
    lines = ["```bash", f"pip install {' '.join(load)}", f"medkit pull hf-hub:{repo_id}", "```", ""]
    if provider is None:
        lines += ["Also install the medkit plugins that provide the tokenizers and objectives listed below "
                  "(`medkit plugins list` names them).", ""]
    if more:
        lines += [f"Continuing pre-training on these modalities also needs `pip install {' '.join(more)}`.", ""]
    lines += ["The distribution is `medkit` (import name `medkit`); the unrelated `medkit-lib` also installs "
              "a top-level `medkit` package — do not install both.", ""]
    return lines


def render_card(*, repo_id: str, arch: Mapping[str, Any], manifest: Mapping[str, Any], license: str | None,
                matrices: Mapping[str, Matrix], heatmap: str | None, strategy_files: Sequence[str],
                provider: Provider | None = None,
                unavailable: Mapping[str, Mapping[str, str]] | None = None,
                data_summary: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The full ``README.md`` text: ``ModelCardData`` front matter + markdown body.

    Args:
        provider: ``provider(kind, name)`` → distribution, for the install line (the caller passes
            the plugin registry's answer; without it the card names only ``medkit``).
        unavailable: ``{metric: {modality: reason}}`` of cells that could not be evaluated.
        data_summary: per modality, the demo flag and sample counts
            (:func:`medkit.hub.card_data.read_data_summary`) for the "Training data" section.
        license: the licence the publisher chose; ``None``: the card claims none.
    """
    from medkit.hub.card_data import data_section, license_line

    from huggingface_hub import ModelCard

    meta = card_metadata(arch=arch, manifest=manifest, license=license, matrices=matrices, repo_id=repo_id)
    info = meta.to_dict()["medkit"]
    trunk = arch.get("trunk", {})
    stages = [s for s in manifest.get("stages", []) if s.get("status") == "done"]
    arrow = " → ".join("+".join(s["modalities"]) for s in stages) or "no finished stage"
    base = base_model_of(manifest)
    lines = [
        f"# {repo_id.split('/')[-1]}", "",
        f"A universal medical encoder continually pre-trained with [medkit](https://pypi.org/project/medkit/) "
        f"(MedCoSS-style continual self-supervised pre-training): {len(stages)} stage(s), {arrow}, "
        f"continual strategy `{info['strategy']}`." + (f" Continued from [{base}](https://huggingface.co/{base})."
                                                      if base else ""), "",
        "## Model", "",
        "| trunk | depth | width | heads | MLP ratio |", "|---|---:|---:|---:|---:|",
        f"| ViT ({arch.get('encoder', {}).get('preset', '?')}) | {trunk.get('depth', '?')} | "
        f"{trunk.get('embed_dim', '?')} | {trunk.get('num_heads', '?')} | {trunk.get('mlp_ratio', '?')} |", "",
        "| modality | tokenizer | pretext objective |", "|---|---|---|",
        *[f"| {_cell(m)} | `{u['tokenizer']}` | `{u['objective']}` |" for m, u in arch.get("uses", {}).items()], "",
        "`model.safetensors` holds the encoder (`encoder.*`, tokenizers under `encoder.tokenizers.<name>.*`) "
        "and one pretext head per modality (`heads.<modality>.*`" + _shared_note(arch) + "); `config.json` is "
        "all that is needed to rebuild them, through medkit's plugin registry (no code is imported from the "
        "repository).", "",
        "## Usage", "", *_usage(repo_id, arch, manifest, provider),
        "```python", "import medkit", "",
        f'model = medkit.load_pretrained("hf-hub:{repo_id}")  # encoder + pretext heads, in eval mode',
        "encoder = model.encoder", "```", "",
        f"Continue pre-training on new data with `medkit run --from hf-hub:{repo_id} --modality <new>`.", "",
        "## Training", "", "| stage | modalities | optimizer steps |", "|---:|---|---:|",
        *[f"| {s.get('index', i + 1)} | {_cell('+'.join(s['modalities']))} | {s.get('steps', '?')} |"
          for i, s in enumerate(stages)], "",
        f"Strategy `{info['strategy']}`, seed {manifest.get('seed', '?')}, "
        f"{manifest.get('world_size', 1)} process(es).", "",
        *data_section(stages, data_summary or {}, base=base),
        *license_line(check_license(license)),
        "## Results", "",
    ]
    if not matrices:
        lines += ["This run has no evaluation matrix.", ""]
    objectives = objectives_of(arch)
    for metric, matrix in matrices.items():
        mi = metric_info(metric)
        units = column_units(metric, matrix.modalities, objectives)
        unit = "; ".join(f"{m}: {u}" for m, u in units.items()) if mi.per_objective else mi.unit
        lines += [f"**{mi.title}** ({mi.better}) of each modality (columns) after each stage (rows); "
                  f"measured on the {mi.split}; unit: {unit}. `–`: not evaluated at that stage, "
                  f"`{NOT_AVAILABLE}`: could not be evaluated.", "", matrix_markdown(matrix), ""]
        notes = (unavailable or {}).get(metric, {})
        lines += [f"- {NOT_AVAILABLE} {m}: {why}" for m, why in notes.items()] + ([""] if notes else [])
    if heatmap:
        lines += [f"![stage matrices, one panel per metric]({heatmap})", ""]
    lines += [
        "## Data and privacy", "",
        "This repository holds weights and configuration only: no training samples, sample ids, "
        "rehearsal buffers, cached features, Fisher information or local data paths (they are removed "
        "from `manifest.json` and `config.yaml` before upload).", "",
    ]
    if strategy_files:
        lines += ["`strategy/` holds the part of the continual strategy's state that derives from no "
                  "sample (e.g. teacher weights, PackNet masks): " + ", ".join(f"`{f}`" for f in strategy_files)
                  + ".", ""]
    versions = manifest.get("versions", {})
    if versions:
        lines += ["## Versions", "", "| package | version |", "|---|---|",
                  *[f"| {_cell(k)} | {_cell(v)} |" for k, v in sorted(versions.items())], ""]
    card = ModelCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(lines))
    return str(card)
