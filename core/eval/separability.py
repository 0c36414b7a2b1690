"""Modality collision, measured: how well a frozen encoder's pooled features tell apart modalities of one dimension.

MedCoSS explains the weaker results of joint training with one decoder per dimension (Joint SSL*) by
*modal data collision*: modalities of the same dimension (X-ray and pathology, CT and MRI) pulled
into one representation. :func:`separability` measures the opposite property on features: a kNN and a
linear probe (the probes of :mod:`medkit.eval.probes`) trained to predict *which modality* a sample
comes from, on held-out samples, reported beside the probe's chance level (the majority-modality rate
of its queries). Accuracy near chance: the modalities' features overlap (collision); near 1: the encoder
keeps them apart. :func:`modality_separability` runs it on a pre-training run directory, per group of
modalities sharing a tokenizer (one input dimension).

Hand-written around medkit's own probes so the numbers are computed exactly as the stage matrices'
probe accuracies are (cosine kNN with a weighted vote, L-BFGS logistic regression, seeded).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch

from medkit.api.components import Components
from medkit.api.errors import CheckpointError, ConfigError
from medkit.eval.probes import chance_level, knn_accuracy, linear_probe_accuracy
from medkit.models.features import pooled_features

log = logging.getLogger(__name__)

#: Fewer samples than this for a modality of a group: the group is not measured (reason given).
MIN_PER_MODALITY = 4
SPLITS = ("held-out", "all")


def separability(features: Mapping[str, torch.Tensor], *, knn_k: int = 5, linear_steps: int = 100,
                 seed: int = 0) -> dict[str, Any]:
    """Probe accuracies predicting the modality from pooled features, with their chance level.

    Each modality's rows ``[N_m, D]`` are split by position: even rows are the probes' training set
    (the kNN memory), odd rows the queries, so every modality is on both sides in proportion.

    Args:
        features: modality → pooled features ``[N_m, D]`` (at least two modalities, two rows each).
        knn_k: neighbours of the kNN probe (0: no kNN probe).
        linear_steps: L-BFGS iterations of the linear probe (0: no linear probe).
        seed: the linear probe's initialisation.

    Returns:
        ``{"modalities", "train", "queries", "chance", "knn_acc", "linear_acc"}``: the accuracies on the
        queries and ``chance``, the queries' majority-modality rate (the accuracy of always answering
        the commonest modality; two balanced modalities: 0.5).
    """
    names = list(features)
    if len(names) < 2:
        raise ConfigError(f"modality separability needs two or more modalities, got {names}")
    mem, mem_y, qry, qry_y = [], [], [], []
    for label, m in enumerate(names):
        x = features[m].detach().double().cpu()
        if x.ndim != 2 or x.shape[0] < 2:
            raise ConfigError(f"modality separability: features of {m!r} must be [N >= 2, D], got {tuple(x.shape)}")
        mem.append(x[0::2])
        qry.append(x[1::2])
        mem_y += [label] * len(x[0::2])
        qry_y += [label] * len(x[1::2])
    train, query = torch.cat(mem), torch.cat(qry)
    y_train, y_query = torch.tensor(mem_y), torch.tensor(qry_y)
    out: dict[str, Any] = {"modalities": names, "train": len(mem_y), "queries": len(qry_y),
                           "chance": chance_level(qry_y)}
    if knn_k > 0:
        out["knn_acc"] = knn_accuracy(train, y_train, query, y_query, k=knn_k)
    if linear_steps > 0:
        out["linear_acc"] = linear_probe_accuracy(train, y_train, query, y_query, steps=linear_steps, seed=seed)
    return out


def modality_separability(run_dir: str | Path, *, components: Components,
                          data: Mapping[str, str] | None = None, split: str = "held-out",
                          max_per_modality: int = 200, knn_k: int = 5, linear_steps: int = 100,
                          batch_size: int = 16) -> dict[str, Any]:
    """:func:`separability` of the encoder of a pre-training run, per input dimension.

    The run's modalities are grouped by tokenizer (``text_1d``, ``patch_2d``, ``patch_3d``); every
    group of two or more is measured on features of the frozen ``eval()`` encoder (``model.safetensors``)
    pooled over un-augmented samples.

    Args:
        run_dir: a ``medkit run`` directory (``config.yaml``, ``config.json``, ``model.safetensors``).
        components: the plugin host (``medkit.registry.get_host()``): builds the modalities and
            tokenizers by their registered names.
        data: modality → folder; a modality not named reads the folder the run recorded in
            ``metrics/split.json`` (its own data; pass ``data`` for a run received from elsewhere).
        split: ``"held-out"`` (the run's held-out samples: data no stage trained on) or ``"all"``.
        max_per_modality: at most this many samples per modality (an even stride over them).
        knn_k, linear_steps: the probes (as :func:`separability`).
        batch_size: samples per encoder forward.

    Returns:
        ``{"run_dir", "split", "groups": {tokenizer: separability result + "samples": {m: n}} or
        {"modalities", "reason"} where it could not be measured}``.
    """
    from medkit.config.received import received_config
    from medkit.models.build import build_model
    from medkit.storage.files import load_state_checked, load_tensors

    if split not in SPLITS:
        raise ConfigError(f"modality separability: split={split!r} is not one of {', '.join(SPLITS)}")
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "model.safetensors").exists():
        raise CheckpointError(f"{run_dir} is not a finished-or-checkpointed medkit run directory (no config.yaml "
                              f"or model.safetensors); run `medkit run --run-dir {run_dir}` first")
    cfg = received_config(run_dir)
    uses: dict[str, dict[str, str]] = cfg["run"]["uses"]
    model = build_model(cfg, create=components.create, with_heads=False, assets_dir=run_dir)
    state = {k: v for k, v in load_tensors(run_dir / "model.safetensors").items() if k.startswith("encoder.")}
    load_state_checked(model.encoder, {k[len("encoder."):]: v for k, v in state.items()},
                       source=str(run_dir / "model.safetensors"))
    encoder = model.encoder.eval()
    recorded = _split_record(run_dir)
    groups: dict[str, list[str]] = {}
    for m, use in uses.items():
        groups.setdefault(use["tokenizer"], []).append(m)
    out: dict[str, Any] = {"run_dir": str(run_dir), "split": split, "groups": {}}
    for tok, mods in groups.items():
        if len(mods) < 2:
            continue
        feats, samples, short = {}, {}, []
        for m in mods:
            ds = _eval_dataset(components, cfg, m, (data or {}).get(m) or recorded.get(m, {}).get("data"))
            idx = _indices(ds, recorded.get(m), split, max_per_modality)
            samples[m] = len(idx)
            if len(idx) < MIN_PER_MODALITY:
                short.append(m)
                continue
            feats[m] = pooled_features(encoder, m, tok, ds, idx, batch_size)
        if short:
            out["groups"][tok] = {"modalities": mods, "samples": samples,
                                  "reason": f"fewer than {MIN_PER_MODALITY} {split} samples of {', '.join(short)}"}
            log.info("modality separability of %s: not measured (%s)", tok, out["groups"][tok]["reason"])
            continue
        result = separability(feats, knn_k=knn_k, linear_steps=linear_steps, seed=int(cfg["run"].get("seed", 0)))
        out["groups"][tok] = {**result, "samples": samples}
        log.info("modality separability of %s (%s): kNN %s, linear %s, chance %.3f", tok, ", ".join(mods),
                 result.get("knn_acc"), result.get("linear_acc"), result["chance"])
    return out


def _split_record(run_dir: Path) -> dict[str, dict[str, Any]]:
    from medkit.storage.files import read_json

    path = run_dir / "metrics" / "split.json"
    if not path.is_file():
        return {}
    record = read_json(path)
    modalities = record.get("modalities") if isinstance(record, dict) else None
    return modalities if isinstance(modalities, dict) else {}


def _eval_dataset(components: Components, cfg: Mapping[str, Any], modality: str, path: str | None) -> Any:
    """The un-augmented dataset of ``modality`` at ``path`` (else its demo data), built with the run's
    options: a prepared folder from its shards (checked against them) or the plugin's reader."""
    from medkit.data.open_data import open_eval_dataset

    plugin = components.create("modality", modality, **dict(cfg.get("modality", {}).get(modality, {})))
    return open_eval_dataset(plugin, modality, path, who="modality separability",
                             hint=f"pass data={{{modality!r}: FOLDER}}")[0]


def _indices(ds: Any, record: Mapping[str, Any] | None, split: str, cap: int) -> list[int]:
    """The samples measured: the run's held-out sources (``split.json``) or all, capped by a stride."""
    from medkit.data.split import sources_of

    if split == "held-out":
        if not record or "val" not in record:
            raise CheckpointError("modality separability: split='held-out' needs the run's metrics/split.json "
                                  "(written by medkit run); pass split='all' for a run without one")
        held = set(str(s) for s in record["val"])
        idx = [i for i, s in enumerate(sources_of(ds)) if s in held]
    else:
        idx = list(range(len(ds)))
    if cap > 0 and len(idx) > cap:
        idx = [idx[(j * len(idx)) // cap] for j in range(cap)]
    return idx
