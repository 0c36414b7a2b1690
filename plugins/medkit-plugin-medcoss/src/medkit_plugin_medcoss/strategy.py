"""The MedCoSS ``rehearsal`` strategy: k-means buffers, intra-modal mixup, feature distillation."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from medkit.api import (
    BaseStrategy, Batch, CheckpointError, ConfigError, LossOutput, PluginError, RunContext, Source,
    UniversalEncoder,
)

from medkit_plugin_medcoss.ablation import BUFFER_LOSSES, SELECTIONS, random_buffer
from medkit_plugin_medcoss.buffer import BufferEntry, build_buffer, check_sizes, indices_for_ids
from medkit_plugin_medcoss.distill import distillation_loss, is_text, snapshot_teacher
from medkit_plugin_medcoss.mixup import DISTRIBUTIONS, mix_images, mix_tokens

log = logging.getLogger(__name__)

STATE_FORMAT = 1
TEACHER_PREFIX = "teacher."
CENTROID_PREFIX = "centroids."


class Rehearsal(BaseStrategy):
    """MedCoSS continual pre-training (``rehearsal``); see :func:`make_rehearsal` for the options.

    * ``after_stage``: k-means over eval-mode features of every training sample of the finished
      modality; the ``k`` samples nearest each of the ``K`` centroids form its buffer (stored as ids).
    * ``before_stage``: buffers of earlier modalities are mapped back to dataset indices and a frozen
      ``eval()`` teacher is copied from the encoder (restored from the state on a mid-stage resume).
    * ``sources``: the current modality plus one ``"buffer"`` source per earlier modality, weighted by
      size, so batches interleave in proportion to their sizes.
    * ``loss``: the pretext loss on current batches; on buffer batches only mixup + distillation.
      Buffer text is first corrupted by the text objective's own MLM masking (``mlm_buffer``), as
      the reference's buffer dataset applies its 0.15 whole-word collator.
    """

    name = "rehearsal"

    def __init__(self, *, buffer_ratio: float, num_center: float, distill_weight: float, mixup: bool,
                 mixup_dist: str, mixup_alpha: float, distill_mask_ratio: float, kmeans_iters: int,
                 kmeans_batch: int, kmeans_seed: int, kmeans_method: str, spill_threshold: int,
                 spill_dir: str | None, per_center_rule: str = "reference", mlm_buffer: bool = True,
                 min_current_fraction: float = 0.5, selection: str = "kmeans",
                 buffer_loss: str = "distill", kmeans_init_sample: int | None = None) -> None:
        self.selection, self.buffer_loss = str(selection), str(buffer_loss)
        self.buffer_ratio, self.num_center = float(buffer_ratio), float(num_center)
        self.distill_weight = float(distill_weight)
        self.mixup, self.mixup_dist, self.mixup_alpha = bool(mixup), str(mixup_dist), float(mixup_alpha)
        self.distill_mask_ratio = float(distill_mask_ratio)
        self.kmeans: dict[str, Any] = {"iters": int(kmeans_iters), "batch": int(kmeans_batch),
                                       "seed": int(kmeans_seed), "method": str(kmeans_method),
                                       "init_sample": kmeans_init_sample}
        self.spill_threshold, self.spill_dir = int(spill_threshold), spill_dir
        self.per_center_rule, self.mlm_buffer = str(per_center_rule), bool(mlm_buffer)
        self.min_current_fraction = float(min_current_fraction)
        self._warned_mlm = False
        self.buffers: dict[str, BufferEntry] = {}
        self.centroids: dict[str, torch.Tensor] = {}
        self.teacher: UniversalEncoder | None = None
        self._teacher_state: dict[str, torch.Tensor] | None = None
        self.active: dict[str, list[int]] = {}

    # -- stages --------------------------------------------------------------------------------
    def before_stage(self, ctx: RunContext) -> None:
        self.active = {m: indices_for_ids(ctx, e, strategy=self.name)
                       for m, e in self.buffers.items() if m not in ctx.stage}
        restored, self._teacher_state = self._teacher_state, None
        if not self.active or self.buffer_loss != "distill":
            self.teacher = None
            if self.active:
                log.info("stage %d rehearses %s with their pretext loss (buffer_loss=pretext)",
                         ctx.stage_index + 1, ", ".join(f"{m} ({len(ix)} samples)" for m, ix in self.active.items()))
            return
        if ctx.stage_state.resumed:
            if restored is None:
                raise CheckpointError(f"strategy {self.name}: resuming stage {ctx.stage_index + 1} mid-way "
                                      f"but the checkpoint holds no distillation teacher; resume from a "
                                      f"stage boundary or start the stage again")
            self.teacher = snapshot_teacher(ctx.encoder)
            self.teacher.load_state_dict(restored, strict=True)
        else:
            self.teacher = snapshot_teacher(ctx.encoder)
        log.info("stage %d rehearses %s", ctx.stage_index + 1,
                 ", ".join(f"{m} ({len(ix)} samples)" for m, ix in self.active.items()))

    def sources(self, ctx: RunContext) -> list[Source]:
        current = [Source(m, list(ctx.train_indices[m]), role="current") for m in ctx.stage]
        rehearsed = [Source(m, list(ix), weight=float(len(ix)), role="buffer") for m, ix in self.active.items()]
        return current + rehearsed

    def loss(self, ctx: RunContext, batch: Batch) -> LossOutput:
        if batch.role != "buffer":
            return ctx.pretext_loss(batch)
        if self.buffer_loss == "pretext":  # the ablation without distillation: rehearse as ER does
            return ctx.pretext_loss(self.mix(ctx, batch) if self.mixup else batch)
        if self.teacher is None:
            raise PluginError(f"strategy {self.name}: got a buffer batch of {batch.modality!r} without a "
                              f"teacher; before_stage was not called for this stage")
        if self.teacher.training:
            self.teacher.eval()
        if self.mlm_buffer and is_text(ctx, batch):
            batch = self.corrupt_text(ctx, batch)
        if self.mixup:
            batch = self.mix(ctx, batch)
        value = distillation_loss(ctx, batch, self.teacher, mask_ratio=self.distill_mask_ratio)
        return LossOutput(self.distill_weight * value, {"distill": value.detach()})

    def corrupt_text(self, ctx: RunContext, batch: Batch, *, generator: torch.Generator | None = None) -> Batch:
        """Buffer text as the reference feeds it to mixup and distillation: MLM-corrupted by the
        modality's objective (its ``mask(encoder, batch)``: 15 % whole words, 80/10/10). An objective
        without ``mask`` leaves the ids clean (logged once)."""
        head = ctx.heads[batch.modality]
        masker = getattr(head, "mask", None)
        if masker is None:
            if not self._warned_mlm:
                log.warning("strategy %s: the objective of %s has no mask(); buffer text is distilled "
                            "uncorrupted", self.name, batch.modality)
                self._warned_mlm = True
            return batch
        return dataclasses.replace(batch, inputs=masker(ctx.encoder, batch, generator=generator).inputs)

    def mix(self, ctx: RunContext, batch: Batch, *, generator: torch.Generator | None = None) -> Batch:
        """Intra-modal mixup of a buffer batch (images: per-sample λ; text: token swap)."""
        if is_text(ctx, batch):
            mixed = mix_tokens(batch.inputs, batch.attention_mask, dist=self.mixup_dist,
                               alpha=self.mixup_alpha, generator=generator)
            return dataclasses.replace(batch, inputs=mixed.ids, attention_mask=mixed.attention_mask)
        out = mix_images(batch.inputs, dist=self.mixup_dist, alpha=self.mixup_alpha, generator=generator)
        return dataclasses.replace(batch, inputs=out.inputs)

    def after_stage(self, ctx: RunContext) -> None:
        for m in ctx.stage:  # every stage, the last included, so `--from` can continue the run
            if self.selection == "random":
                self.buffers.pop(m, None)
                self.centroids.pop(m, None)
                self.buffers[m] = random_buffer(ctx, m, buffer_ratio=self.buffer_ratio, num_center=self.num_center,
                                                seed=self.kmeans["seed"], rule=self.per_center_rule)
                continue
            entry, centroids = build_buffer(
                ctx, m, buffer_ratio=self.buffer_ratio, num_center=self.num_center,
                iters=self.kmeans["iters"], batch=self.kmeans["batch"], seed=self.kmeans["seed"],
                method=self.kmeans["method"], spill_threshold=self.spill_threshold, spill_dir=self.spill_dir,
                rule=self.per_center_rule, init_sample=self.kmeans["init_sample"])
            self.buffers.pop(m, None)
            self.buffers[m] = entry
            self.centroids[m] = centroids
        self.teacher, self.active = None, {}

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"{CENTROID_PREFIX}{m}": c for m, c in self.centroids.items()}
        teacher = self.teacher.state_dict() if self.teacher is not None else self._teacher_state
        if teacher:
            tensors.update({f"{TEACHER_PREFIX}{k}": v for k, v in teacher.items()})
        meta = {"format": STATE_FORMAT, "strategy": self.name,
                "buffers": [e.to_json() for e in self.buffers.values()], "teacher": bool(teacher)}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if not meta:
            return
        if meta.get("strategy", self.name) != self.name or int(meta.get("format", 0)) != STATE_FORMAT:
            raise CheckpointError(f"strategy {self.name}: the saved strategy state is from "
                                  f"{meta.get('strategy')!r} format {meta.get('format')!r}, expected "
                                  f"{self.name!r} format {STATE_FORMAT}; continue with the run's own strategy")
        entries = [BufferEntry.from_json(e) for e in meta.get("buffers", [])]
        self.buffers = {e.modality: e for e in entries}
        self.centroids = {k[len(CENTROID_PREFIX):]: v for k, v in tensors.items() if k.startswith(CENTROID_PREFIX)}
        teacher = {k[len(TEACHER_PREFIX):]: v for k, v in tensors.items() if k.startswith(TEACHER_PREFIX)}
        self._teacher_state = teacher or None
        self.teacher = None


def make_rehearsal(buffer_ratio: float = 0.05, num_center: float = 0.01, distill_weight: float = 1.0,
                   mixup: bool = True, mixup_dist: str = "uniform", mixup_alpha: float = 1.0,
                   distill_mask_ratio: float = 0.75, kmeans_iters: int = 50, kmeans_batch: int = 4096,
                   kmeans_seed: int = 0, kmeans_method: str = "lloyd", spill_threshold: int = 200_000,
                   spill_dir: str | None = None, per_center_rule: str = "reference", mlm_buffer: bool = True,
                   min_current_fraction: float = 0.5, selection: str = "kmeans",
                   buffer_loss: str = "distill", kmeans_init_sample: int | None = None) -> Rehearsal:
    """MedCoSS rehearsal: k-means buffer + intra-modal mixup + feature distillation.

    ``selection``, ``mixup``, ``buffer_loss`` and ``buffer_ratio`` switch MedCoSS's parts one at a time
    for ablations; the defaults are MedCoSS.

    Args:
        buffer_ratio: buffer size as a fraction of a modality's training samples (MedCoSS 0.05).
        num_center: k-means clusters as a fraction of the samples, ``K = max(1, int(num_center·N))``.
        per_center_rule: samples kept per cluster: ``"reference"`` (MedCoSS ``main_buffer_kmean.py``:
            ``k = max(1, int(N·buffer_ratio // K))``) or ``"fixed"`` (``k = max(1, int(buffer_ratio /
            num_center))``, medkit's earlier rule, which ignores ``buffer_ratio`` for small N).
        distill_weight: weight of the distillation loss on buffer batches.
        mixup: mix buffer batches within themselves before distilling.
        mixup_dist: ``"uniform"`` (λ ~ U(0, 1), MedCoSS) or ``"beta"`` (λ ~ Beta(α, α)).
        mixup_alpha: α of the Beta distribution.
        distill_mask_ratio: fraction of image tokens masked (identically for student and teacher).
        kmeans_iters: most k-means iterations.
        kmeans_batch: rows per k-means chunk (bounds memory).
        kmeans_seed: k-means seed; the buffer is a function of it and the model.
        kmeans_method: ``"lloyd"`` or ``"minibatch"``.
        kmeans_init_sample: rows k-means++ seeds on (``None``: all rows up to ``max(20·K, 10000)``, a
            seeded sample beyond; a number ≥ N seeds on every row, as scikit-learn does).
        spill_threshold: above this many samples, features are kept on disk as fp16.
        spill_dir: where spilled features go (default: the run directory; removed afterwards).
        mlm_buffer: MLM-corrupt buffer text (the objective's own masking) before mixup and
            distillation, as the reference does; ``False`` distils clean ids.
        min_current_fraction: the least share of a stage's steps on its own data (read by the
            engine's step plan), in ``[0, 1]``.
        selection: ``"kmeans"`` (MedCoSS) or ``"random"``: a uniform draw of the same size, no
            feature pass (the ablation of the k-means selection).
        buffer_loss: ``"distill"`` (MedCoSS: feature distillation from the frozen teacher) or
            ``"pretext"``: buffer batches train with their own pretext loss, as ER does (the ablation
            of distillation; mixup still applies when ``mixup`` is true).
    """
    check_sizes(buffer_ratio, num_center, per_center_rule)
    if mixup_dist not in DISTRIBUTIONS:
        raise ConfigError(f"strategy rehearsal: mixup_dist must be one of {', '.join(DISTRIBUTIONS)}, "
                          f"got {mixup_dist!r}")
    if mixup_dist == "beta" and mixup_alpha <= 0:
        raise ConfigError(f"strategy rehearsal: mixup_alpha must be > 0, got {mixup_alpha}")
    if not 0.0 <= distill_mask_ratio < 1.0:
        raise ConfigError(f"strategy rehearsal: distill_mask_ratio must be in [0, 1), got {distill_mask_ratio}")
    if kmeans_method not in ("lloyd", "minibatch"):
        raise ConfigError(f"strategy rehearsal: kmeans_method must be 'lloyd' or 'minibatch', got {kmeans_method!r}")
    if kmeans_init_sample is not None and kmeans_init_sample < 1:
        raise ConfigError(f"strategy rehearsal: kmeans_init_sample must be >= 1 or null, got {kmeans_init_sample}")
    if kmeans_iters < 1 or kmeans_batch < 1 or spill_threshold < 0:
        raise ConfigError(f"strategy rehearsal: kmeans_iters ({kmeans_iters}) and kmeans_batch "
                          f"({kmeans_batch}) must be ≥ 1 and spill_threshold ({spill_threshold}) ≥ 0")
    if not 0.0 <= float(min_current_fraction) <= 1.0:
        raise ConfigError(f"strategy rehearsal: min_current_fraction must be in [0, 1], got "
                          f"{min_current_fraction}; set strategy.min_current_fraction=0.5 (the default)")
    if selection not in SELECTIONS:
        raise ConfigError(f"strategy rehearsal: selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if buffer_loss not in BUFFER_LOSSES:
        raise ConfigError(f"strategy rehearsal: buffer_loss must be one of {', '.join(BUFFER_LOSSES)}, "
                          f"got {buffer_loss!r}")
    return Rehearsal(selection=selection, buffer_loss=buffer_loss, buffer_ratio=buffer_ratio, num_center=num_center,
                     distill_weight=distill_weight,
                     mixup=mixup, mixup_dist=mixup_dist, mixup_alpha=mixup_alpha,
                     distill_mask_ratio=distill_mask_ratio, kmeans_iters=kmeans_iters,
                     kmeans_batch=kmeans_batch, kmeans_seed=kmeans_seed, kmeans_method=kmeans_method,
                     spill_threshold=spill_threshold, spill_dir=spill_dir, per_center_rule=per_center_rule,
                     mlm_buffer=mlm_buffer, min_current_fraction=min_current_fraction,
                     kmeans_init_sample=kmeans_init_sample)
