"""``medkit run --from REF``: a run config that adds new stages after a finished model's stages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medkit.config.compose import Selection, compose
from medkit.config.received import received_manifest
from medkit.api.errors import CheckpointError, ConfigError
from medkit.eval.records import evaluations_before

log = logging.getLogger(__name__)


def source_stages(src: Path, arch: dict[str, Any]) -> list[list[str]]:
    """The stages a checkpoint went through (its manifest), or one per modality it has heads for."""
    manifest = src / "manifest.json"
    if manifest.exists():
        done = received_manifest(manifest).get("stages_done")
        if done:
            return [list(s) for s in done]
    return [[m] for m in arch["uses"]]


def compose_continuation(ref: str, src: Path, sel: Selection, *, host: Any = None) -> dict[str, Any]:
    """Compose the config of a run that continues ``src`` (resolved from ``ref``) with the
    modalities of ``sel`` as new stages; the architecture always comes from ``src``."""
    from medkit.hub.hub import read_architecture

    arch = read_architecture(src)
    bad = [o for o in sel.overrides if o.lstrip("+").startswith("encoder.")]
    if bad:
        raise ConfigError(f"{bad[0]}: with --from the encoder comes from {ref}; drop encoder.* overrides")
    prev_stages = source_stages(src, arch)
    prev = [m for stage in prev_stages for m in stage]
    prev = list(dict.fromkeys(prev))
    new = list(sel.modalities)
    everything = prev + [m for m in new if m not in prev]
    manifest = received_manifest(src / "manifest.json") if (src / "manifest.json").exists() else {}
    # A received manifest's data paths are never read: the earlier modalities are evaluated only on
    # folders the user names with --data (others are "not evaluated", see not_evaluated_after_from).
    data = dict(sel.data)
    unnamed = [m for m in prev if not data.get(m) and (manifest.get("data") or {}).get(m)]
    if unnamed:
        log.info("%s names data folders for %s; medkit does not read a received run's data paths: pass "
                 "--data M=DIR to evaluate those modalities", ref, ", ".join(unnamed))
    preset = str(arch["encoder"].get("preset", sel.preset))
    cfg = compose(Selection(modalities=everything, strategy=sel.strategy, preset=preset, data=data,
                            seed=sel.seed, max_steps=sel.max_steps, overrides=list(sel.overrides)), host=host)
    cfg["encoder"] = dict(arch["encoder"])
    for m in prev:
        use = arch["uses"].get(m)
        if use is None:
            continue
        cfg["run"]["uses"][m] = dict(use)
        for kind in ("tokenizer", "objective"):
            name = use[kind]
            if name in arch[kind]:
                cfg[kind][name] = dict(arch[kind][name])
    cfg["run"]["from"] = {"ref": ref, "path": str(src), "stages": prev_stages,
                          "strategy": manifest.get("strategy")}
    cfg["run"]["new_modalities"] = new
    return cfg


def load_origin(origin: dict[str, Any], model: Any, strategy: Any, name: str, *,
                fresh: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Load the weights of the model a ``--from`` run continues and, where it kept the state of the
    same strategy, that state. Returns the strategy to use (``fresh()`` when the kept state does not
    fit) and the earlier stages' evaluation rows."""
    from medkit.hub.hub import load_pretrained_weights
    from medkit.storage import files as ck

    src = Path(origin["path"])
    report = load_pretrained_weights(model, src)
    new = [p.rstrip(".") for p in report["new"]]
    log.info("continuing %s: %d earlier stage(s) %s; %s", origin["ref"], len(origin["stages"]), origin["stages"],
             f"newly initialised (not in that model): {', '.join(new)}" if new else
             "every weight of this model comes from it (no part starts from random initialisation)")
    state = src / "strategy" / "state.json"
    if state.exists() and origin.get("strategy") == name:
        try:
            strategy.load_state_dict(ck.load_tensors(src / "strategy" / "state.safetensors"), ck.read_json(state))
        except (KeyError, ValueError, TypeError, CheckpointError) as exc:
            # a published repo ships only the parts of the state that carry no patient data
            log.info("%s ships only part of the %s state (%s): %s starts with no state from earlier stages",
                     origin["ref"], name, exc, name)
            strategy = fresh()
        else:
            log.info("restored the %s state of %s (buffers, teachers, Fisher, masks as kept)", name, origin["ref"])
    elif state.exists():
        log.info("%s was trained with strategy %r, not %r: %s starts with no state from earlier stages",
                 origin["ref"], origin.get("strategy"), name, name)
    else:
        log.info("%s ships no strategy state: %s starts with no state from earlier stages "
                 "(no buffers, teachers or Fisher of them)", origin["ref"], name)
    evaluations: list[dict[str, Any]] = []
    eval_file = src / "metrics" / "eval.json"
    if eval_file.exists():
        evaluations = evaluations_before(ck.read_json(eval_file), len(origin["stages"]))  # 1-based, old or new
    return strategy, evaluations


def not_evaluated_after_from(cfg: dict[str, Any]) -> dict[str, str]:
    """``{modality: reason}`` of the earlier run's modalities whose data are not here (no ``--data``
    and none found from the earlier run): they are marked "not evaluated", never evaluated on the
    demo data (``RunContext.not_evaluated``, read by :func:`medkit.eval.evaluate.evaluate_stage`)."""
    origin = cfg["run"].get("from")
    if not origin:
        return {}
    given = cfg["run"].get("data") or {}
    new = set(cfg["run"].get("new_modalities") or [])
    earlier = dict.fromkeys(m for stage in origin["stages"] for m in stage)
    return {m: (f"trained in {origin['ref']}; its data are not here (pass --data {m}=DIR to evaluate it), "
                f"and it is never evaluated on the demo data")
            for m in earlier if not given.get(m) and m not in new}
