"""``medkit run --from REF``: a run config that adds new stages after a finished model's stages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medkit.storage.files import read_json
from medkit.config.compose import Selection, compose
from medkit.api.errors import ConfigError

log = logging.getLogger(__name__)


def source_stages(src: Path, arch: dict[str, Any]) -> list[list[str]]:
    """The stages a checkpoint went through (its manifest), or one per modality it has heads for."""
    manifest = src / "manifest.json"
    if manifest.exists():
        done = read_json(manifest).get("stages_done")
        if done:
            return [list(s) for s in done]
    return [[m] for m in arch["uses"]]


def compose_continuation(ref: str, src: Path, sel: Selection) -> dict[str, Any]:
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
    manifest = read_json(src / "manifest.json") if (src / "manifest.json").exists() else {}
    data = dict(sel.data)
    for m in prev:
        if data.get(m):
            continue
        old = (manifest.get("data") or {}).get(m)
        if old and Path(str(old)).exists():
            data[m] = str(old)
    preset = str(arch["encoder"].get("preset", sel.preset))
    cfg = compose(Selection(modalities=everything, strategy=sel.strategy, preset=preset, data=data,
                            seed=sel.seed, max_steps=sel.max_steps, overrides=list(sel.overrides)))
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
