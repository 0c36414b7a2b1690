"""Pretext heads shared by several modalities (``joint`` with ``strategy.decoders=dimension``)."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from medkit.api.errors import CheckpointError, ConfigError

#: The values of ``strategy.decoders``: one pretext head per modality (MedCoSS's Joint SSL†, the
#: default) or one per input dimension and objective (Joint SSL*).
DECODERS = ("modality", "dimension")
#: Where the sharing is recorded: ``config.json`` (and the ``run`` section of a config rebuilt from it).
SHARED_KEY = "shared_heads"


def check_decoders(value: Any, *, who: str = "strategy joint") -> str:
    """``value`` if it is one of :data:`DECODERS`, else a :class:`ConfigError` naming the choices."""
    text = str(value)
    if text not in DECODERS:
        raise ConfigError(f"{who}: decoders={value!r} is not one of {', '.join(DECODERS)}; set "
                          f"strategy.decoders=modality (one decoder per modality, the default) or "
                          f"strategy.decoders=dimension (one decoder per input dimension and objective)")
    return text


def by_dimension(uses: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """``{alias: owner}``: every modality whose tokenizer (its input dimension: ``text_1d``,
    ``patch_2d``, ``patch_3d``) and objective an earlier modality of ``uses`` already has shares
    that modality's head; the owner is the first such modality in ``uses`` order."""
    owners: dict[tuple[str, str], str] = {}
    out: dict[str, str] = {}
    for m, use in uses.items():
        key = (str(use["tokenizer"]), str(use["objective"]))
        if key in owners:
            out[m] = owners[key]
        else:
            owners[key] = m
    return out


def shared_heads(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The ``{alias: owner}`` head sharing of a run config: as recorded (``run.shared_heads``, from a
    ``config.json``) or as ``strategy.decoders=dimension`` asks; ``{}`` for one head per modality."""
    run = cfg.get("run") or {}
    recorded = run.get(SHARED_KEY)
    if recorded is not None:
        return check_recorded(recorded, run.get("uses") or {}, where="config")
    strategy = cfg.get("strategy") or {}
    if str(strategy.get("decoders", "modality")) == "dimension":  # the joint factory checks the value
        return by_dimension(run["uses"])
    return {}


def check_recorded(recorded: Any, uses: Mapping[str, Any], *, where: str) -> dict[str, str]:
    """A recorded ``shared_heads`` mapping, checked: every alias and owner a modality of ``uses``, no
    owner itself an alias, and both with the same tokenizer and objective."""
    if not isinstance(recorded, Mapping):
        raise CheckpointError(f"{where}: {SHARED_KEY} must map a modality to the modality whose head it "
                              f"shares, got {type(recorded).__name__}")
    out = {str(a): str(o) for a, o in recorded.items()}
    for alias, owner in out.items():
        if alias not in uses or owner not in uses or owner in out or alias == owner:
            raise CheckpointError(f"{where}: {SHARED_KEY} entry {alias!r} → {owner!r} does not name two "
                                  f"modalities of the model (it has {', '.join(uses)})")
        a, o = uses[alias], uses[owner]
        if (a.get("tokenizer"), a.get("objective")) != (o.get("tokenizer"), o.get("objective")):
            raise CheckpointError(f"{where}: {SHARED_KEY} says {alias!r} shares the head of {owner!r}, but "
                                  f"their tokenizer/objective differ ({a} vs {o})")
    return out


def drop_aliases(state: Mapping[str, torch.Tensor], shared: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """``state`` without the keys of shared heads' aliases (each shared head is stored once, under
    its owner: safetensors refuses two names for one storage)."""
    prefixes = tuple(f"heads.{a}." for a in shared)
    return {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}


def expand_aliases(state: Mapping[str, torch.Tensor], shared: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """``state`` with every alias head's keys filled from its owner's (what ``load_state_dict`` of a
    module holding one head under several names expects); keys already there are kept."""
    out = dict(state)
    for alias, owner in shared.items():
        prefix = f"heads.{owner}."
        for k, v in state.items():
            if k.startswith(prefix):
                out.setdefault(f"heads.{alias}.{k[len(prefix):]}", v)
    return out


def adopt_heads(state: Mapping[str, torch.Tensor], source_uses: Mapping[str, Any], source_shared: Mapping[str, str],
                target_shared: Mapping[str, str]) -> tuple[dict[str, torch.Tensor], set[str], set[str]]:
    """A checkpoint's tensors as a model with sharing ``target_shared`` stores them (``--from``).

    The checkpoint's own shared heads are first expanded to one per modality; then, for every alias of
    the target, its owner's head is kept (taken from the alias's head where the checkpoint has no
    owner head) and the alias's keys are removed.

    Returns:
        the tensors, the modalities the checkpoint fills a head of, and the key prefixes of separate
        checkpoint heads left unused because the target shares another modality's head instead.
    """
    out = expand_aliases(state, source_shared)
    filled = set(source_uses)
    unused: set[str] = set()
    for alias, owner in target_shared.items():
        prefix = f"heads.{alias}."
        keys = {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}
        if owner not in filled and keys:  # the checkpoint knows only the alias: its head becomes the owner's
            out.update({f"heads.{owner}.{k}": v for k, v in keys.items()})
            filled.add(owner)
        elif keys and source_shared.get(alias) != owner:
            unused.add(prefix)
        for k in [k for k in out if k.startswith(prefix)]:
            del out[k]
    return out, filled, unused


def refuse_decoders_elsewhere(strategy: str, declared: Any, overrides: Any) -> None:
    """A :class:`ConfigError` when ``strategy.decoders`` is overridden for a strategy that declares no
    such option (only ``joint`` does: a stage-by-stage strategy trains each decoder in its own stage,
    so sharing one would score earlier modalities with the last stage's decoder, an experiment the
    paper's Joint SSL* is not)."""
    if "decoders" in declared:
        return
    for item in overrides:
        key = str(item).partition("=")[0].strip().lstrip("+")
        if key == "strategy.decoders":
            raise ConfigError(f"override {item}: strategy {strategy!r} has no decoders option; decoders "
                              f"shared per dimension (Joint SSL*) are an option of the joint strategy: "
                              f"use --strategy joint strategy.decoders=dimension, or drop the override")
