"""What a run directory publishes: model, architecture, tokenizer assets, a manifest and config with
local paths removed, the model card, and (on request) the strategy state that derives from no sample."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from medkit.storage import files as ck
from medkit.api.errors import CheckpointError

log = logging.getLogger(__name__)

#: Which strategy tensors may travel is declared by each strategy: the roots of its state tensor names
#: that hold weights or masks (``StrategySpec(..., meta={"publishable_state": ["teacher"]})``). A strategy
#: that declares nothing publishes nothing. Whatever a strategy declares, these name parts mark something
#: derived from samples (ids, buffers, features, Fisher, paths...) and never travel.
PUBLISHABLE_STATE = "publishable_state"
#: Publishes what a strategy declares: ``publishable(strategy name) -> roots`` (the CLI asks the plugin host).
Publishable = Callable[[str], Sequence[str]]
SENSITIVE_PARTS = frozenset({"id", "ids", "buffer", "buffers", "feature", "features", "feat", "feats",
                             "fisher", "importance", "sample", "samples", "path", "paths", "patient",
                             "data", "index", "indices", "label", "labels", "grad", "grads", "file",
                             "files", "cache", "cached"})
_ABS_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\|file://)")
_DROP = object()


def _parts(name: str) -> list[str]:
    """``teacher_features.0`` → ``["teacher", "features", "0"]`` (also splits camelCase)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [p for p in re.split(r"[^a-z0-9]+", spaced.lower()) if p]


def is_sensitive_name(name: str) -> bool:
    return any(p in SENSITIVE_PARTS for p in _parts(name))


def strategy_tensor_allowed(name: str, publishable: Iterable[str]) -> bool:
    """Conservative allow-list: the name's first (or, under a namespace, second) part is one of the roots
    the strategy declares ``publishable`` (teacher or predictor weights, masks, owner tables), and no
    part names ids, buffers, features, Fisher or data."""
    roots = {str(r).lower() for r in publishable}
    parts = _parts(name)
    rooted = bool(parts) and (parts[0] in roots or (len(parts) > 1 and parts[1] in roots))
    return rooted and not is_sensitive_name(name)


def looks_like_path(value: str) -> bool:
    return bool(_ABS_PATH.match(value))


def _strip_meta(node: Any, where: str, dropped: list[str]) -> Any:
    """Keep numbers, booleans and short id-free strings; drop sensitive keys, string lists, paths."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            key = f"{where}.{k}" if where else str(k)
            if is_sensitive_name(str(k)):
                dropped.append(key)
                continue
            kept = _strip_meta(v, key, dropped)
            if kept is not _DROP:
                out[k] = kept
        return out
    if isinstance(node, list):
        if any(isinstance(v, str) for v in node):  # may be sample ids
            dropped.append(where)
            return _DROP
        kept_items = [_strip_meta(v, f"{where}[{i}]", dropped) for i, v in enumerate(node)]
        return [v for v in kept_items if v is not _DROP]
    if isinstance(node, str) and (looks_like_path(node) or any(c in node for c in "/\\#")):
        dropped.append(where)
        return _DROP
    return node


def filter_strategy_state(tensors: dict[str, Any], meta: Any, publishable: Iterable[str] = ()
                          ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The publishable part of a strategy's ``state_dict()`` (tensors under the roots it declares
    ``publishable``) and what was left out."""
    roots = list(publishable)
    kept = {k: v for k, v in tensors.items() if strategy_tensor_allowed(k, roots)}
    dropped = sorted(set(tensors) - set(kept))
    meta_dropped: list[str] = []
    stripped = _strip_meta(meta if isinstance(meta, dict) else {}, "", meta_dropped)
    return kept, stripped if isinstance(stripped, dict) else {}, dropped + [f"state.json:{k}" for k in meta_dropped]


def scrub_paths(node: Any, where: str = "", removed: list[str] | None = None) -> Any:
    """Replace every string that looks like an absolute local path by ``None`` (records the keys)."""
    removed = removed if removed is not None else []
    if isinstance(node, dict):
        return {k: scrub_paths(v, f"{where}.{k}" if where else str(k), removed) for k, v in node.items()}
    if isinstance(node, list):
        return [scrub_paths(v, f"{where}[{i}]", removed) for i, v in enumerate(node)]
    if isinstance(node, str) and looks_like_path(node):
        removed.append(where)
        return None
    return node


def _portable_tokenizers(tokenizers: dict[str, Any], run_dir: Path, section: str) -> None:
    """A tokenizer that read its vocabulary from a local file reads the pushed assets instead."""
    for name, params in tokenizers.items():
        if not isinstance(params, dict) or not params.get("vocab_file"):
            continue
        if not (run_dir / "tokenizers" / name / "tokenizer.json").is_file():
            raise CheckpointError(f"{run_dir}: tokenizer {name} reads its vocabulary from {params['vocab_file']} "
                                  f"but the run has no tokenizers/{name}/tokenizer.json to publish in its place")
        params["vocab_file"] = None
        log.info("%s: tokenizer.%s.vocab_file now reads the published tokenizers/%s/ assets", section, name, name)


def sanitize_architecture(arch: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    arch = copy.deepcopy(arch)
    _portable_tokenizers(arch.get("tokenizer", {}), run_dir, "config.json")
    removed: list[str] = []
    return scrub_paths(arch, "", removed), removed


def sanitize_config(cfg: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    cfg = copy.deepcopy(cfg)
    removed: list[str] = []
    run = cfg.get("run", {})
    if run.get("data"):
        removed += [f"run.data.{m}" for m, p in run["data"].items() if p]
        run["data"] = {m: None for m in run["data"]}
    _portable_tokenizers(cfg.get("tokenizer", {}), run_dir, "config.yaml")
    return scrub_paths(cfg, "", removed), removed


def sanitize_manifest(manifest: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    manifest = copy.deepcopy(manifest)
    removed = ["data"] if manifest.pop("data", None) is not None else []
    return scrub_paths(manifest, "", removed), removed


def prepare_push(run_dir: Path, staging: Path, *, repo_id: str, license: str | None = None,
                 include_strategy_state: bool = False, provider: Any = None,
                 publishable: Publishable | None = None, host: Any) -> dict[str, Path]:
    """Write the generated files into ``staging`` and return ``{path in repository: local file}``.

    Never included: ``checkpoint/`` (optimizer, RNG, resume copies), ``strategy/`` unless
    ``include_strategy_state`` (and then only :func:`strategy_tensor_allowed` tensors and a stripped
    JSON, recorded as ``manifest["published"]["strategy_state"]``), ``metrics/steps.jsonl``, and
    every local data path. ``metrics/eval.json`` (strict JSON, stages counted from 1) and the matrix
    CSVs travel (aggregate numbers). ``provider(kind, name)`` names the distribution of a component
    for the card's install line (the CLI passes the plugin registry's answer); ``publishable(strategy)``
    the state roots the run's strategy declares (``publishable_state``; none when not given); ``host``
    (the plugin host) gives the components' config schemas the re-emitted config is typed against.
    """
    from medkit.config.received import (reemit_architecture, reemit_manifest, reemit_run_config, received_architecture,
                                        received_config, received_manifest)
    from medkit.config.yaml import to_yaml
    from medkit.eval.matrices import matrix_files, run_matrices
    from medkit.eval.records import read_evaluations, write_json
    from medkit.hub.card import check_license, objectives_of, render_card, render_heatmap

    run_dir, staging = Path(run_dir), Path(staging)
    license = check_license(license)
    for name in ("model.safetensors", "config.json", "config.yaml", "manifest.json"):
        if not (run_dir / name).is_file():
            raise CheckpointError(f"{run_dir} is not a finished medkit run directory ({name} missing)")
    # Through the gate (no ${...}, no _target_/_args_, no tags, the types medkit reads), then re-emitted
    # from the typed schema: what is published is what the schema knows, never the received bytes.
    manifest, dropped_manifest = reemit_manifest(received_manifest(run_dir / "manifest.json"),
                                                 str(run_dir / "manifest.json"))
    if not manifest.get("finished"):
        log.warning("%s is not finished (stage %s, step %s); pushing its latest checkpoint", run_dir,
                    manifest.get("current", {}).get("stage"), manifest.get("current", {}).get("step"))
    files: dict[str, Path] = {"model.safetensors": run_dir / "model.safetensors"}
    arch, dropped_arch = reemit_architecture(received_architecture(run_dir / "config.json"),
                                             str(run_dir / "config.json"), host)
    arch, removed_arch = sanitize_architecture(arch, run_dir)
    ck.atomic_write_json(staging / "config.json", arch)
    cfg, dropped_cfg = reemit_run_config(received_config(run_dir), str(run_dir / "config.yaml"), host)
    cfg, removed_cfg = sanitize_config(cfg, run_dir)
    for name, dropped in (("manifest.json", dropped_manifest), ("config.json", dropped_arch),
                          ("config.yaml", dropped_cfg)):
        if dropped:
            log.warning("%s: not published (unknown to medkit's config schema): %s", run_dir / name,
                        ", ".join(dropped))
    ck.atomic_write_text(staging / "config.yaml", to_yaml(cfg))
    files.update({"config.json": staging / "config.json", "config.yaml": staging / "config.yaml"})
    for path in sorted((run_dir / "tokenizers").rglob("*")) if (run_dir / "tokenizers").is_dir() else []:
        if path.is_file():
            files[path.relative_to(run_dir).as_posix()] = path

    strategy_files: list[str] = []
    strategy_note: dict[str, Any] | None = None
    if include_strategy_state and (run_dir / "strategy" / "state.safetensors").is_file():
        tensors = ck.load_tensors(run_dir / "strategy" / "state.safetensors")
        meta_path = run_dir / "strategy" / "state.json"
        meta = ck.read_json(meta_path) if meta_path.is_file() else {}
        strategy = str(manifest.get("strategy") or "")
        roots = list(publishable(strategy)) if publishable is not None and strategy else []
        kept, kept_meta, dropped = filter_strategy_state(tensors, meta, roots)
        log.warning("--include-strategy-state: publishing %d of %d strategy tensors (teacher/predictor weights, "
                    "masks); %d entries derived from patient data (buffer ids, cached features, Fisher, paths) "
                    "stay local", len(kept), len(tensors), len(dropped))
        if kept or kept_meta:
            ck.save_tensors(staging / "strategy" / "state.safetensors", kept, metadata={"format": "medkit-1"})
            ck.atomic_write_json(staging / "strategy" / "state.json", kept_meta)
            strategy_files = ["strategy/state.safetensors", "strategy/state.json"]
            files.update({f: staging / f for f in strategy_files})
        strategy_note = {"subset": True, "tensors": sorted(kept), "left_out": len(dropped)}

    for path in matrix_files(run_dir).values():  # stage × modality numbers: what a continued run (--from) extends
        files[f"metrics/{path.name}"] = path
    matrices = run_matrices(run_dir)
    unavailable: dict[str, dict[str, str]] = {}
    if (run_dir / "metrics" / "eval.json").is_file():
        evaluations = scrub_paths(read_evaluations(run_dir / "metrics" / "eval.json"))
        write_json(staging / "metrics" / "eval.json", evaluations)
        files["metrics/eval.json"] = staging / "metrics" / "eval.json"
        for record in evaluations:
            for metric, per in record.get("unavailable", {}).items():
                unavailable.setdefault(metric, {}).update(per)
    heatmap = render_heatmap(matrices, staging / "matrix.png", objectives=objectives_of(arch)) if matrices else None
    if heatmap is not None:
        files["matrix.png"] = heatmap

    public_manifest, removed_manifest = sanitize_manifest(manifest)
    public_manifest["files"] = {rel: ck.sha256_file(src) for rel, src in sorted(files.items())}
    public_manifest["published"] = {"by": "medkit push", "removed": sorted(set(
        [f"manifest.{k}" for k in removed_manifest] + [f"config.yaml:{k}" for k in removed_cfg]
        + [f"config.json:{k}" for k in removed_arch]))}
    if strategy_note is not None:
        public_manifest["published"]["strategy_state"] = strategy_note
    ck.atomic_write_json(staging / "manifest.json", public_manifest)
    files["manifest.json"] = staging / "manifest.json"
    from medkit.hub.card_data import read_data_summary

    card = render_card(repo_id=repo_id, arch=arch, manifest=public_manifest, license=license, matrices=matrices,
                       heatmap="matrix.png" if heatmap is not None else None, strategy_files=strategy_files,
                       provider=provider, unavailable=unavailable, data_summary=read_data_summary(run_dir))
    ck.atomic_write_text(staging / "README.md", card)
    files["README.md"] = staging / "README.md"
    return files
