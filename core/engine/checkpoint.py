"""What one checkpoint of a pre-training run holds, written and read as one generation
(see :mod:`medkit.engine.generations` for the commit protocol)."""

from __future__ import annotations

import importlib.metadata as md
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from medkit.api.context import RunContext
from medkit.engine.generations import Generation, GenerationStore
from medkit.engine.ordered import reduce_record
from medkit.eval.records import normalise_evaluations
from medkit.models.build import MODEL_METADATA, TOKENIZER_ASSETS, Model, architecture
from medkit.storage import files as ck

log = logging.getLogger(__name__)


def package_versions(dists: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of medkit, its main dependencies and the given plugin distributions."""
    out = {}
    names = ["medkit", "torch", "timm", "monai", "safetensors"]
    names += [d for d in dists if d not in names]
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def config_digest(cfg: dict[str, Any]) -> str:
    from medkit.config.compose import config_hash

    return config_hash(cfg)


@dataclass
class RunRecord:
    """The bookkeeping a checkpoint carries besides tensors."""

    evaluations: list[dict[str, Any]] = field(default_factory=list)
    stage_steps: dict[int, int] = field(default_factory=dict)
    pending_steps: list[dict[str, Any]] = field(default_factory=list)
    realised_mix: dict[int, dict[str, int]] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)


def manifest(cfg: dict[str, Any], ctx: RunContext, record: RunRecord, *, stage: int, step: int, finished: bool,
             data_paths: dict[str, str], world_size: int, dists: Iterable[str], files: dict[str, str]
             ) -> dict[str, Any]:
    """``manifest.json``: stages done, the position, config hash, versions, data and file hashes."""
    stages = []
    for i, mods in enumerate(ctx.stages):
        status = "done" if i < stage else ("running" if i == stage and not finished else "pending")
        entry: dict[str, Any] = {"index": i + 1, "modalities": mods, "status": status,
                                 "steps": record.stage_steps.get(i, 0)}
        if i in record.realised_mix:
            entry["mix"] = record.realised_mix[i]
        stages.append(entry)
    origin = cfg["run"].get("from")
    if origin:
        for i in range(len(origin["stages"])):
            stages[i]["source"] = origin["ref"]
    return {
        "format": 2, "strategy": cfg["run"]["strategy"],
        "from": ({"ref": origin["ref"], "stages": origin["stages"], "strategy": origin.get("strategy")}
                 if origin else None), "modalities": cfg["run"]["modalities"],
        "stages": stages, "stages_done": [s["modalities"] for s in stages if s["status"] == "done"],
        "current": {"stage": stage + 1, "step": step}, "finished": finished,
        "config_hash": config_digest(cfg), "versions": package_versions(dists),
        "data": data_paths, "seed": cfg["run"]["seed"], "world_size": world_size, "files": files,
        "resume_overrides": list(cfg["run"].get("resume_overrides", [])),
        "reduce": _reduction(cfg, world_size),
    }


def _reduction(cfg: dict[str, Any], world_size: int) -> dict[str, Any]:
    """The manifest's ``reduce``: how this run sums gradients (:func:`medkit.engine.ordered.reduce_record`)."""
    from medkit.config.typed import trainer_config

    tr = trainer_config(cfg)
    return reduce_record(tr.reduce, tr.reduce_group, tr.batch_size * world_size, tr.accum_steps)


def write_tokenizers(gen: Generation, model: Model) -> None:
    """``tokenizers/<name>/`` of the generation: the assets (vocabularies) of every tokenizer that
    has a ``save_pretrained``, saved into the staging folder so they are committed with the weights
    that use them; a later generation carries the previous one's unchanged (a run's tokenizers do not
    change while it trains)."""
    if gen.carry(TOKENIZER_ASSETS):
        return
    for name, tok in model.encoder.tokenizers.items():
        saver = getattr(tok, "save_pretrained", None)
        if callable(saver):
            saver(gen.path / TOKENIZER_ASSETS / name)


def write_generation(store: GenerationStore, *, cfg: dict[str, Any], ctx: RunContext, model: Model,
                     strategy: Any, record: RunRecord, stage: int, step: int, finished: bool,
                     data_paths: dict[str, str], world_size: int, dists: Iterable[str],
                     write_matrices: Any) -> Path:
    """Stage every file of the checkpoint at (``stage``, ``step``) and commit it as one generation.

    ``step == 0`` marks a stage boundary: its strategy state becomes ``strategy/`` (what ``--from``
    continues with); mid-stage generations carry the previous boundary's ``strategy/`` unchanged.
    """
    gen: Generation = store.begin()
    try:
        return _fill_and_commit(store, gen, cfg=cfg, ctx=ctx, model=model, strategy=strategy, record=record,
                                stage=stage, step=step, finished=finished, data_paths=data_paths,
                                world_size=world_size, dists=dists, write_matrices=write_matrices)
    except BaseException:
        store.abandon(gen)  # a failed checkpoint (a full disk) leaves no staging copy of the weights
        raise


def _fill_and_commit(store: GenerationStore, gen: Generation, *, cfg: dict[str, Any], ctx: RunContext,
                     model: Model, strategy: Any, record: RunRecord, stage: int, step: int, finished: bool,
                     data_paths: dict[str, str], world_size: int, dists: Iterable[str],
                     write_matrices: Any) -> Path:
    model_file = gen.write_tensors("model.safetensors", model.state_dict(), MODEL_METADATA)
    write_tokenizers(gen, model)
    gen.write_json("config.json", architecture(cfg))
    if ctx.optimizer is not None:
        tensors, meta = ck.optimizer_to_tensors(ctx.optimizer)
        gen.write_tensors("checkpoint/optimizer.safetensors", tensors)
        gen.write_json("checkpoint/optimizer.json", meta)
    gen.write_tensors("checkpoint/rng.safetensors", ck.rng_state())
    s_tensors, s_meta = strategy.state_dict()
    gen.write_tensors("checkpoint/strategy.safetensors", s_tensors)
    gen.write_json("checkpoint/strategy.json", s_meta)
    if step == 0:
        gen.write_tensors("strategy/state.safetensors", s_tensors)
        gen.write_json("strategy/state.json", s_meta)
    else:
        gen.carry("strategy")
    gen.write_json("checkpoint/trainer.json", {
        "stage": stage, "step": step, "finished": finished, "evaluations": record.evaluations,
        "stage_steps": {str(k): v for k, v in record.stage_steps.items()},
        "realised_mix": {str(k): v for k, v in record.realised_mix.items()},
        "has_optimizer": ctx.optimizer is not None})
    gen.extend_lines("metrics/steps.jsonl", record.pending_steps)
    write_matrices(gen.path / "metrics", record.evaluations, cfg["run"]["modalities"])
    gen.write_json("metrics/eval.json", record.evaluations)
    if record.split:
        gen.write_json("metrics/split.json", record.split)
    files = {"model.safetensors": ck.sha256_file(model_file), "config.json": ck.sha256_file(gen.path / "config.json")}
    if (store.run_dir / "config.yaml").is_file():
        files["config.yaml"] = ck.sha256_file(store.run_dir / "config.yaml")
    gen.write_json("manifest.json", manifest(cfg, ctx, record, stage=stage, step=step, finished=finished,
                                             data_paths=data_paths, world_size=world_size, dists=dists,
                                             files=files))
    final = store.commit(gen)
    record.pending_steps = []
    return final


@dataclass
class Restored:
    """What ``--resume`` found in the current generation."""

    path: Path
    stage: int
    step: int
    finished: bool
    has_optimizer: bool

    def rng(self) -> dict[str, torch.Tensor]:
        return ck.load_tensors(self.path / "checkpoint" / "rng.safetensors")

    def load_optimizer(self, opt: torch.optim.Optimizer, device: torch.device) -> None:
        ck.load_optimizer(self.path / "checkpoint", opt, device)


def read_generation(path: Path, record: RunRecord) -> Restored:
    """Fill ``record`` from generation ``path`` and say where the run stopped."""
    trainer = ck.read_json(path / "checkpoint" / "trainer.json")
    record.evaluations = normalise_evaluations(trainer.get("evaluations", []))  # 1-based, old or new
    record.stage_steps = {int(k): int(v) for k, v in trainer.get("stage_steps", {}).items()}
    record.realised_mix = {int(k): dict(v) for k, v in trainer.get("realised_mix", {}).items()}
    record.pending_steps = []
    return Restored(path=path, stage=int(trainer["stage"]), step=int(trainer["step"]),
                    finished=bool(trainer.get("finished")), has_optimizer=bool(trainer.get("has_optimizer")))


def read_steps(path: Path) -> list[dict[str, Any]]:
    """The step log of a run or generation (``metrics/steps.jsonl``)."""
    from medkit.storage.jsonl import read_jsonl

    return read_jsonl(Path(path) / "metrics" / "steps.jsonl")
