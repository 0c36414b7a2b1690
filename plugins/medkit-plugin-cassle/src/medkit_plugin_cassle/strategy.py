"""CaSSLe (``cassle``): the student's pooled features, through a predictor, distilled to the frozen
encoder of the previous stage."""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medkit.api import (
    BaseStrategy, Batch, CheckpointError, ConfigError, LossOutput, RunContext, UniversalEncoder,
    load_state_checked, make_noise, random_masking,
)

log = logging.getLogger(__name__)
LOSSES = ("predictive", "mse")


def make_predictor(dim: int, hidden: int = 2048) -> nn.Sequential:
    """CaSSLe's predictor ``D → hidden → D``: Linear, BatchNorm1d, ReLU, Linear (PyTorch default init)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim))


def distill_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "predictive") -> torch.Tensor:
    """Distillation loss of predictions ``[B, D]`` to (detached) teacher features ``[B, D]``.

    ``predictive``: the BYOL form ``mean_b (2 − 2·cos(pred_b, target_b))`` (in [0, 4]), which is
    CaSSLe's distillation loss for BYOL-type methods (Fini et al., CVPR 2022; ``cassle/losses/byol.py``
    ``byol_loss_func``: ``2 - 2 * (F.normalize(p) * F.normalize(z)).sum(dim=1).mean()``).
    ``mse``: ``mean((pred − target)²)`` over ``B × D``. Computed in float32.
    """
    pred, target = pred.float(), target.detach().float()
    if kind == "predictive":
        return 2.0 - 2.0 * F.cosine_similarity(pred, target, dim=-1).mean()
    if kind == "mse":
        return (pred - target).pow(2).mean()
    raise ConfigError(f"strategy cassle: loss_type {kind!r} is not one of {', '.join(LOSSES)}")


def pooled(encoder: UniversalEncoder, tokenizer: str, batch: Batch, ids_keep: torch.Tensor | None) -> torch.Tensor:
    """Mean of the non-padding, non-CLS output tokens ``[B, D]``."""
    return encoder(tokenizer, batch.inputs, batch.attention_mask, ids_keep=ids_keep).pooled()


class CaSSLe(BaseStrategy):
    """CaSSLe (Fini et al., CVPR 2022) on the pooled features of the shared encoder.

    From the second stage on, a frozen copy of the encoder as it was at the end of the previous stage
    (the *teacher*: ``eval()`` mode, no gradients, its own tokenizers) and a predictor ``g``
    (D → ``pred_hidden`` → D: Linear, BatchNorm1d, ReLU, Linear) are used on every current-stage batch:

        ``loss = pretext + lam · distill(g(pool(student(x))), stopgrad(pool(teacher(x))))``

    As in CaSSLe (``cassle/distillers/predictive.py``: the ``distill_predictor`` is built once in the
    model's ``__init__`` and trained through every task), the predictor is created once, at the start
    of the second stage (seeded by the run seed), and kept and trained across all later stages.

    ``distill`` = the BYOL form ``2 − 2·cos`` (``predictive``) or ``mse``, and ``pool`` the mean over
    non-padding patch/text tokens. The logged metric ``cassle`` is the (unweighted) distill term.

    Cost: the student features come from a *separate* forward of the encoder (the pretext objective
    does not expose its latent), so each step runs the student twice (pretext + distill) and the
    teacher once, without gradient. ``distill_mask_ratio > 0`` makes both distillation passes see the
    same random subset of tokens (shared noise, like MedCoSS's feature distillation), cutting their
    cost; 0 (default) feeds the whole input to both.

    The predictor is its own optimizer group (``lr_scale = pred_lr_scale``, ``weight_decay =
    pred_weight_decay``). The predictor is always saved in the state (``predictor.*``, so ``--from``
    and resumes keep it); the teacher (``teacher.*``) only while a stage runs, so a resumed run
    continues with exactly the same teacher; it is dropped after its stage (the next stage copies the
    encoder anew).

    Args:
        lam: weight of the distillation term.
        loss_type: ``"predictive"`` or ``"mse"``.
        pred_hidden: hidden width of the predictor.
        pred_lr_scale: learning-rate multiplier of the predictor group.
        pred_weight_decay: weight decay of the predictor group.
        distill_mask_ratio: fraction of tokens removed for the distillation passes, in ``[0, 1)``.
    """

    name = "cassle"

    def __init__(self, lam: float = 1.0, loss_type: str = "predictive", pred_hidden: int = 2048,
                 pred_lr_scale: float = 1.0, pred_weight_decay: float = 0.0,
                 distill_mask_ratio: float = 0.0) -> None:
        if loss_type not in LOSSES:
            raise ConfigError(f"strategy cassle: loss_type {loss_type!r} is not one of {', '.join(LOSSES)}; "
                              f"set strategy.loss_type=predictive or strategy.loss_type=mse")
        if pred_hidden < 1 or lam < 0 or pred_lr_scale < 0 or pred_weight_decay < 0:
            raise ConfigError(f"strategy cassle: pred_hidden ({pred_hidden}) must be >= 1 and lam, "
                              f"pred_lr_scale, pred_weight_decay >= 0")
        if not 0.0 <= distill_mask_ratio < 1.0:
            raise ConfigError(f"strategy cassle: distill_mask_ratio must be in [0, 1), got {distill_mask_ratio}")
        self.lam, self.loss_type, self.pred_hidden = float(lam), loss_type, int(pred_hidden)
        self.pred_lr_scale, self.pred_weight_decay = float(pred_lr_scale), float(pred_weight_decay)
        self.distill_mask_ratio = float(distill_mask_ratio)
        self.teacher: UniversalEncoder | None = None
        self.predictor: nn.Sequential | None = None
        self.stage: int | None = None  # the stage the teacher belongs to
        self._loaded: tuple[dict[str, torch.Tensor], int | None] = ({}, None)
        self._predictor_state: dict[str, torch.Tensor] | None = None  # loaded, not yet built

    # -- engine calls --------------------------------------------------------------------------
    def _build_predictor(self, ctx: RunContext) -> nn.Sequential:
        """The persistent predictor: the one already trained, else the saved one, else a new one
        seeded by the run seed only (so it does not depend on the stage it first appears in)."""
        if self.predictor is not None:
            return self.predictor
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(hashlib.sha1(f"cassle:{ctx.seed}".encode()).hexdigest()[:12], 16))
            predictor = make_predictor(ctx.encoder.embed_dim, self.pred_hidden)
        if self._predictor_state:
            load_state_checked(predictor, self._predictor_state, source=f"{ctx.run_dir} strategy state (cassle)")
            log.info("cassle: stage %d continues with the saved predictor", ctx.stage_index + 1)
        self._predictor_state = None
        return predictor.to(ctx.device).train()

    def before_stage(self, ctx: RunContext) -> None:
        self.teacher, self.stage = None, None
        if ctx.stage_index == 0:
            return
        tensors, stage = self._loaded
        resume = ctx.stage_state.resumed and stage == ctx.stage_index and self._part(tensors, "teacher.")
        teacher = copy.deepcopy(ctx.encoder)
        self.predictor = self._build_predictor(ctx)
        if resume:
            source = f"{ctx.run_dir} strategy state (cassle)"
            load_state_checked(teacher, self._part(tensors, "teacher."), source=source)
            log.info("cassle: stage %d resumes with its saved teacher", ctx.stage_index + 1)
        elif ctx.stage_state.resumed:
            raise CheckpointError(f"strategy cassle: resuming stage {ctx.stage_index + 1} mid-way but the "
                                  f"saved state holds no teacher for it; the checkpoint is incomplete")
        teacher.eval()
        teacher.requires_grad_(False)
        for p in teacher.parameters():
            p.grad = None
        self.teacher = teacher.to(ctx.device)
        self.stage = ctx.stage_index
        self._loaded = ({}, None)

    def parameters_groups(self, ctx: RunContext) -> list[dict[str, Any]]:
        if self.predictor is None:
            return []
        return [{"params": list(self.predictor.parameters()), "lr_scale": self.pred_lr_scale,
                 "weight_decay": self.pred_weight_decay}]

    def loss(self, ctx: RunContext, batch: Batch) -> LossOutput:
        out = ctx.pretext_loss(batch)
        if self.teacher is None or self.predictor is None:
            return out
        if len(batch) < 2:
            raise ConfigError(f"strategy cassle: a {batch.modality} batch of {len(batch)} sample; the "
                              f"predictor's BatchNorm1d needs at least 2 per batch (and per rank): raise "
                              f"trainer.batch_size")
        tokenizer = ctx.tokenizer_of[batch.modality]
        ids_keep = None
        if self.distill_mask_ratio > 0:
            num_tokens = ctx.encoder.tokenize(tokenizer, batch.inputs, batch.attention_mask).x.shape[1]
            noise = make_noise(len(batch), num_tokens, device=batch.inputs.device)
            ids_keep = random_masking(noise, self.distill_mask_ratio).ids_keep
        self.teacher.eval()
        with torch.no_grad():
            target = pooled(self.teacher, tokenizer, batch, ids_keep)  # [B, D]
        student = pooled(ctx.encoder, tokenizer, batch, ids_keep)  # [B, D]
        distill = distill_loss(self.predictor(student), target, self.loss_type)
        total = out.loss + self.lam * distill.to(out.loss.dtype)
        return LossOutput(total, {**out.metrics, "cassle": distill.detach()})

    def after_stage(self, ctx: RunContext) -> None:
        self.teacher, self.stage = None, None  # the predictor is kept for the next stages

    # -- state ------------------------------------------------------------------------------------
    @staticmethod
    def _part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if self.predictor is not None:
            predictor = self.predictor.state_dict()
        else:
            predictor = self._predictor_state or self._part(self._loaded[0], "predictor.")
        tensors = {f"predictor.{k}": v for k, v in predictor.items()}
        if self.teacher is not None:
            tensors.update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
            return tensors, {"format": 2, "stage": self.stage}
        tensors.update({k: v for k, v in self._loaded[0].items() if k.startswith("teacher.")})
        return tensors, {"format": 2, "stage": self._loaded[1]}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        bad = [k for k in tensors if not k.startswith(("teacher.", "predictor."))]
        if bad:
            raise CheckpointError(f"strategy cassle: unexpected state tensor {bad[0]!r} (expected teacher.* "
                                  f"and predictor.*)")
        stage = meta.get("stage")
        self._loaded = (dict(tensors), None if stage is None else int(stage))
        self._predictor_state = self._part(tensors, "predictor.") or None
        self.predictor = None
