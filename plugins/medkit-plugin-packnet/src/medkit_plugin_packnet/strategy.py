"""PackNet (``packnet``): each stage owns a disjoint, magnitude-pruned subset of the trunk's weights."""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from medkit.api import BaseStrategy, CheckpointError, ConfigError, RunContext, UniversalEncoder

from medkit_plugin_packnet.masks import FREE, MAX_STAGES, assign_owners, default_ratios, eval_keep

log = logging.getLogger(__name__)


def _generator(*keys: Any) -> torch.Generator:
    seed = int(hashlib.sha1(":".join(map(str, keys)).encode()).hexdigest()[:15], 16)
    return torch.Generator().manual_seed(seed)


def prunable_weights(encoder: UniversalEncoder) -> dict[str, nn.Parameter]:
    """The ``.weight`` of every ``nn.Linear`` inside ``encoder.blocks``, by encoder parameter name."""
    return dict(encoder.trunk_linear_weights())


class PackNet(BaseStrategy):
    """PackNet (Mallya & Lazebnik, 2018) for continual pre-training of the shared trunk.

    Ownership: every element of the prunable weights (the ``weight`` of each ``nn.Linear`` in
    ``encoder.blocks``: qkv, attention proj, fc1, fc2) is free or owned by one stage. During stage
    ``k`` the forward pass uses all weights; those owned by stages ``< k`` are frozen (their gradients
    are zeroed in ``after_backward`` and their values re-imposed in ``after_optimizer_step``, because
    AdamW's weight decay — and momentum — would otherwise still move them). After stage ``k``:

    1. **prune** — per layer, among the still-free weights keep the ``n_free − floor(r_k · n_free)``
       largest ``|w|`` for stage ``k`` and release the rest (set to exactly 0, free for later stages);
    2. **fine-tune** — ``finetune_steps`` AdamW steps (weight decay 0, constant lr = ``finetune_lr_scale``
       × the stage's base lr) of the stage's pretext loss on its own augmented training data, with only
       the weights just kept (plus the other parameters trainable this stage) updated;
    3. the kept weights are frozen for good.

    Everything else in the encoder — biases, LayerNorms, LayerScale, the CLS token and the tokenizers
    (patch embeddings and position tables) — trains in the first stage and is frozen afterwards; a
    tokenizer that no earlier stage used trains in its first stage, then freezes too. Pretext heads
    are per modality and only trained by their own stage.

    Evaluation: ``eval_context(ctx, m)`` zeroes the weights owned by stages after ``m``'s stage and the
    free ones, so a modality's features are exactly (bit for bit) those right after its own stage.

    Args:
        prune_ratios: ``r_k`` per stage, each in ``[0, 1)``, one per stage of the run. ``None``: equal
            shares, ``r_k = 1 − 1/(K − k)`` for ``K`` stages (every stage owns ``1/K`` of each layer; the
            last prunes nothing, so nothing is left for a stage added later with ``--from``).
        finetune_steps: post-pruning fine-tuning steps; ``None`` → ``round(finetune_fraction · max_steps)``.
        finetune_fraction: see ``finetune_steps`` (0.1 = 10% of the stage's steps).
        finetune_lr_scale: fine-tuning lr as a fraction of the stage's base (peak) lr.
    """

    name = "packnet"

    def __init__(self, prune_ratios: list[float] | None = None, finetune_steps: int | None = None,
                 finetune_fraction: float = 0.1, finetune_lr_scale: float = 0.1) -> None:
        if prune_ratios is not None:
            prune_ratios = [float(r) for r in prune_ratios]
            bad = [r for r in prune_ratios if not 0.0 <= r < 1.0]
            if bad:
                raise ConfigError(f"strategy packnet: prune_ratios must each be in [0, 1), got {bad[0]}; "
                                  f"e.g. strategy.prune_ratios=[0.5,0.5,0.0]")
        if (finetune_steps is not None and finetune_steps < 0) or finetune_fraction < 0 or finetune_lr_scale < 0:
            raise ConfigError("strategy packnet: finetune_steps, finetune_fraction and finetune_lr_scale "
                              "must be >= 0")
        self.prune_ratios = prune_ratios
        self.finetune_steps = finetune_steps
        self.finetune_fraction = float(finetune_fraction)
        self.finetune_lr_scale = float(finetune_lr_scale)
        self.owners: dict[str, torch.Tensor] = {}  # weight name -> uint8 owner map (FREE or stage + 1)
        self.pruned: list[int] = []  # stages already pruned, in order
        self.ratios_used: list[float] = []
        self._frozen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (mask, values)

    # -- helpers -----------------------------------------------------------------------------
    def ratio(self, ctx: RunContext, stage: int) -> float:
        """The prune ratio of ``stage`` (0-based)."""
        ratios = self.prune_ratios if self.prune_ratios is not None else default_ratios(len(ctx.stages))
        return ratios[stage]

    def stage_of(self, ctx: RunContext, modality: str) -> int:
        for i, stage in enumerate(ctx.stages):
            if modality in stage:
                return i
        raise ConfigError(f"strategy packnet: modality {modality!r} is in no stage of this run "
                          f"({ctx.stages})")

    def _set_trainable(self, ctx: RunContext) -> None:
        weights = {id(p) for p in prunable_weights(ctx.encoder).values()}
        used_before = {ctx.tokenizer_of[m] for m in ctx.previous}
        for name, p in ctx.encoder.named_parameters():
            tokenizer = ctx.encoder.parameter_tokenizer(name)
            if id(p) in weights or ctx.stage_index == 0:
                p.requires_grad_(True)
            elif tokenizer is not None:
                p.requires_grad_(tokenizer not in used_before)
            else:
                p.requires_grad_(False)

    @torch.no_grad()
    def _reimpose(self, ctx: RunContext, *, zero_free: bool = False) -> None:
        """Put back the values of weights owned by earlier stages (and zero the free ones)."""
        weights = prunable_weights(ctx.encoder)
        for name, (mask, values) in self._frozen.items():
            weights[name].masked_scatter_(mask, values)
        if zero_free:
            for name, w in weights.items():
                w.masked_fill_(self.owners[name] == FREE, 0.0)

    # -- engine calls --------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        if len(ctx.stages) > MAX_STAGES:
            raise ConfigError(f"strategy packnet: at most {MAX_STAGES} stages, this run has {len(ctx.stages)}")
        if self.prune_ratios is not None and len(self.prune_ratios) < len(ctx.stages):
            raise ConfigError(f"strategy packnet: prune_ratios has {len(self.prune_ratios)} entries but the "
                              f"run has {len(ctx.stages)} stages; give one ratio per stage")
        weights = prunable_weights(ctx.encoder)
        if not self.owners:
            self.owners = {n: torch.zeros(w.shape, dtype=torch.uint8, device=w.device) for n, w in weights.items()}
        if set(self.owners) != set(weights):
            extra = sorted(set(self.owners) ^ set(weights))
            raise CheckpointError(f"strategy packnet: the saved owner maps and the encoder's Linear weights "
                                  f"differ (first: {extra[0]}); the state comes from another architecture")
        for name, w in weights.items():
            if tuple(self.owners[name].shape) != tuple(w.shape):
                raise CheckpointError(f"strategy packnet: owner map of {name} has shape "
                                      f"{tuple(self.owners[name].shape)} but the weight has {tuple(w.shape)}")
            self.owners[name] = self.owners[name].to(device=w.device, dtype=torch.uint8)

    def before_stage(self, ctx: RunContext) -> None:
        self._set_trainable(ctx)
        weights = prunable_weights(ctx.encoder)
        self._frozen = {}
        free = total = 0
        for name, w in weights.items():
            owned = self.owners[name] != FREE
            self._frozen[name] = (owned, w.detach()[owned].clone())
            free += int((~owned).sum())
            total += owned.numel()
        if free == 0:
            log.warning("packnet: stage %d has no free weights left in the trunk (earlier stages own all "
                        "%d); only its new tokenizer and head can learn", ctx.stage_index + 1, total)
        else:
            log.info("packnet: stage %d trains %d of %d trunk Linear weights", ctx.stage_index + 1, free, total)

    def after_backward(self, ctx: RunContext) -> None:
        self._mask_grads(ctx, keep=FREE)

    def after_optimizer_step(self, ctx: RunContext) -> None:
        self._reimpose(ctx)  # AdamW's decay and momentum would still move the frozen weights

    def _mask_grads(self, ctx: RunContext, *, keep: int) -> None:
        for name, w in prunable_weights(ctx.encoder).items():
            if w.grad is not None:
                w.grad.masked_fill_(self.owners[name] != keep, 0.0)

    def after_stage(self, ctx: RunContext) -> None:
        self._reimpose(ctx)
        stage = ctx.stage_index
        if stage not in self.pruned:
            ratio = self.ratio(ctx, stage)
            kept = total = 0
            with torch.no_grad():
                for name, w in prunable_weights(ctx.encoder).items():
                    owner = assign_owners(w, self.owners[name], stage, ratio)
                    self.owners[name] = owner
                    w.masked_fill_(owner == FREE, 0.0)
                    kept += int((owner == stage + 1).sum())
                    total += owner.numel()
            self.pruned.append(stage)
            self.ratios_used.append(ratio)
            log.info("packnet: stage %d keeps %d of %d trunk Linear weights (prune ratio %.3f)",
                     stage + 1, kept, total, ratio)
            self._finetune(ctx)
        for p in ctx.encoder.parameters():
            p.requires_grad_(True)

    def _finetune(self, ctx: RunContext) -> None:
        steps = self.finetune_steps if self.finetune_steps is not None \
            else int(round(self.finetune_fraction * ctx.max_steps))
        if steps <= 0 or ctx.optimizer is None:
            return
        stage, own = ctx.stage_index, ctx.stage_index + 1
        base_lr = float(ctx.optimizer.defaults["lr"]) * self.finetune_lr_scale
        groups = [{"params": list(g["params"]), "lr": base_lr * float(g.get("lr_scale", 1.0))}
                  for g in ctx.optimizer.param_groups]
        opt = torch.optim.AdamW(groups, lr=base_lr, betas=tuple(ctx.optimizer.defaults["betas"]),
                                weight_decay=0.0)
        # the run's own step primitive (device, AMP, clipping, DDP), with this stage's own masks
        train_step = ctx.make_step(opt, after_backward=lambda: self._mask_grads(ctx, keep=own),
                                   after_optimizer_step=lambda: self._reimpose(ctx, zero_free=True))
        mods = [m for m in ctx.stage if ctx.train_indices.get(m)]
        global_bs = ctx.batch_size * ctx.world_size
        was_training = ctx.model.training if ctx.model is not None else True
        if ctx.model is not None:
            ctx.model.train()
        try:
            for step in range(steps):
                m = mods[step % len(mods)]
                pool = list(ctx.train_indices[m])
                turn = step // len(mods)
                picked = []
                for j in range(turn * global_bs, (turn + 1) * global_bs):
                    epoch, pos = divmod(j, len(pool))
                    perm = torch.randperm(len(pool), generator=_generator("packnet", ctx.seed, stage, m, epoch))
                    picked.append(pool[int(perm[pos])])
                mine = picked[ctx.rank * ctx.batch_size:(ctx.rank + 1) * ctx.batch_size]
                aug = int(_generator("packnet-aug", ctx.seed, stage, step, ctx.rank).initial_seed() % (2**31))
                batch = ctx.load_batch(m, mine, seed=aug, train=True)
                mask_gen = _generator("packnet-mask", ctx.seed, stage, step)
                out = train_step(lambda b, g=mask_gen: ctx.pretext_loss(b, generator=g), batch)
                log.debug("packnet: stage %d fine-tune step %d/%d loss %.4f", stage + 1, step + 1, steps,
                          float(out.loss))
        finally:
            opt.zero_grad(set_to_none=True)
            if ctx.model is not None:
                ctx.model.train(was_training)

    @contextmanager
    def _masked(self, ctx: RunContext, modality: str) -> Iterator[None]:
        stage = self.stage_of(ctx, modality)
        saved = []
        with torch.no_grad():
            for name, w in prunable_weights(ctx.encoder).items():
                drop = ~eval_keep(self.owners[name], stage, pruned=stage in self.pruned)
                if bool((w[drop] != 0).any()):
                    saved.append((w, w.detach().clone()))
                    w.masked_fill_(drop, 0.0)
        try:
            yield
        finally:
            with torch.no_grad():
                for w, value in saved:
                    w.copy_(value)

    def eval_context(self, ctx: RunContext, modality: str) -> Any:
        """Only the weights of stages up to ``modality``'s own are used inside this context."""
        return self._masked(ctx, modality)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"owner.{n}": o for n, o in self.owners.items()}
        return tensors, {"format": 1, "pruned": list(self.pruned), "ratios": list(self.ratios_used)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        owners = {}
        for key, value in tensors.items():
            if not key.startswith("owner."):
                raise CheckpointError(f"strategy packnet: unexpected state tensor {key!r} (expected owner.<weight>)")
            owners[key[len("owner."):]] = value.to(torch.uint8)
        self.owners = owners
        self.pruned = [int(s) for s in meta.get("pruned", [])]
        self.ratios_used = [float(r) for r in meta.get("ratios", [])]
