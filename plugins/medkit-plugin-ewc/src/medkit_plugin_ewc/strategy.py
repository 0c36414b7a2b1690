"""Elastic weight consolidation (``ewc``) of every shared encoder parameter a stage trained, separate or online."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import torch

from medkit.api import BaseStrategy, Batch, CheckpointError, ConfigError, LossOutput, RunContext

from medkit_plugin_ewc.fisher import Anchor, diagonal_fisher, ewc_penalty, online_update

log = logging.getLogger(__name__)
MODES = ("separate", "online")


def trained_parameters(ctx: RunContext) -> dict[str, torch.nn.Parameter]:
    """The shared encoder parameters the current stage trains: the trunk (blocks, final norm), the
    CLS token and the tokenizers of the stage's modalities (``patch_2d`` when X-ray or pathology is
    in the stage, ...). The pretext heads are per modality, not shared, and are not included."""
    used = {ctx.tokenizer_of[m] for m in ctx.stage}
    return {n: p for n, p in ctx.encoder.shared_parameters(used).items() if p.requires_grad}


def shared_parameters(encoder: Any) -> dict[str, torch.nn.Parameter]:
    """Every encoder parameter (trunk, CLS token, all tokenizers), by name: what a penalty may cover."""
    return dict(encoder.shared_parameters())


def _generator(*keys: Any) -> torch.Generator:
    seed = int(hashlib.sha1(":".join(map(str, keys)).encode()).hexdigest()[:15], 16)
    return torch.Generator().manual_seed(seed)


class EWC(BaseStrategy):
    """Elastic weight consolidation (Kirkpatrick et al., 2017) of the shared encoder.

    After every stage the diagonal Fisher of the stage's pretext loss is estimated at the stage's
    final weights θ* over its training data (see :meth:`compute_fisher`), and later stages train on

        ``loss = pretext + λ · Σ_anchors Σ_i F_i (θ_i − θ*_i)²``       (no factor ½)

    over every shared parameter the consolidated stage trained (:func:`trained_parameters`: trunk,
    CLS token and the tokenizers of its modalities), as EWC penalises every parameter of the network
    that the earlier task used — so a tokenizer shared by two modalities (``patch_2d`` for X-ray
    and pathology) is protected too. The per-modality pretext heads are not shared and not penalised.
    ``mode="separate"`` keeps one (F, θ*) anchor per finished
    stage and sums their penalties; ``mode="online"`` keeps one anchor, ``F ← γ·F_old + F_new`` and
    θ* = the latest stage's weights (Schwarz et al., 2018). The logged metric ``ewc`` is λ·penalty.

    Fisher convention: ``F = (1/K) Σ_k g_k²`` with ``g_k`` the gradient of the *minibatch-mean* pretext
    loss of minibatch ``k`` over un-augmented training samples. By default (``fisher_batches=None``) the
    minibatches are one full pass over the stage's training data, as Avalanche's EWC does: every
    training sample of every modality of the stage exactly once, in a seeded order, in minibatches of
    ``fisher_batch_size`` (the last of each modality may be smaller). ``fisher_batches=K`` instead draws K
    minibatches deterministically from the seed and stage — cheaper on a large archive, but a sampled
    estimate whose per-element values can differ a lot from the full pass (the README gives a measure).
    The model is in ``eval()`` mode (no drop-path) and every minibatch's masking noise comes from its
    own fixed generator, so the estimate is a deterministic function of the weights and the data (and
    of the world size only through float summation order).

    Args:
        lam: λ, the weight of the penalty (1.0 by default; the Fisher of a minibatch-mean loss is small,
            so useful values depend on the model and are typically far larger — tune it).
        mode: ``"separate"`` or ``"online"``.
        gamma: γ of online EWC (ignored in ``separate`` mode).
        fisher_batches: K, the number of minibatches of the Fisher estimate (``None``: one full pass).
        fisher_batch_size: samples per minibatch (``None``: the run's ``trainer.batch_size``).
    """

    name = "ewc"

    def __init__(self, lam: float = 1.0, mode: str = "separate", gamma: float = 1.0,
                 fisher_batches: int | None = None, fisher_batch_size: int | None = None) -> None:
        if mode not in MODES:
            raise ConfigError(f"strategy ewc: mode {mode!r} is not one of {', '.join(MODES)}; "
                              f"set strategy.mode=separate or strategy.mode=online")
        if lam < 0 or gamma < 0:
            raise ConfigError(f"strategy ewc: lam ({lam}) and gamma ({gamma}) must be >= 0")
        if (fisher_batches is not None and fisher_batches < 1) or \
                (fisher_batch_size is not None and fisher_batch_size < 1):
            raise ConfigError(f"strategy ewc: fisher_batches ({fisher_batches}) and fisher_batch_size "
                              f"({fisher_batch_size}) must be >= 1 (fisher_batches=null: one full pass)")
        self.lam, self.mode, self.gamma = float(lam), mode, float(gamma)
        self.fisher_batches = None if fisher_batches is None else int(fisher_batches)
        self.fisher_batch_size = None if fisher_batch_size is None else int(fisher_batch_size)
        self.last_fisher_batches = 0
        self.anchors: list[Anchor] = []
        #: per anchor, the 0-based stage indices it consolidates (several in online mode)
        self.anchor_stages: list[list[int]] = []

    # -- Fisher ------------------------------------------------------------------------------
    def fisher_plan(self, ctx: RunContext) -> list[tuple[str, list[int]]]:
        """The minibatches of the current stage's Fisher: ``(modality, training indices)``.

        With ``fisher_batches=None``: one full pass — each modality's training indices in a seeded
        permutation, cut into minibatches of ``fisher_batch_size``, the modalities in stage order.
        With ``fisher_batches=K``: minibatch ``k`` takes the stage's modalities in turn
        (``k mod #modalities``) and the next ``fisher_batch_size`` indices of a seeded permutation of
        that modality's training indices (a new permutation once one is used up).
        """
        bs = self.fisher_batch_size or ctx.batch_size
        mods = [m for m in ctx.stage if ctx.train_indices.get(m)]
        if not mods:
            raise ConfigError(f"strategy ewc: stage {ctx.stage_index + 1} ({'+'.join(ctx.stage)}) has no "
                              f"training samples to estimate the Fisher from; check --data")
        if self.fisher_batches is None:
            full: list[tuple[str, list[int]]] = []
            for m in mods:
                pool = list(ctx.train_indices[m])
                perm = torch.randperm(len(pool), generator=_generator("ewc", ctx.seed, ctx.stage_index, m, 0))
                order = [pool[int(j)] for j in perm]
                full += [(m, order[i:i + bs]) for i in range(0, len(order), bs)]
            return full
        cursor = {m: 0 for m in mods}
        perms: dict[str, list[int]] = {m: [] for m in mods}
        plan = []
        for k in range(int(self.fisher_batches)):
            m = mods[k % len(mods)]
            pool = list(ctx.train_indices[m])
            picked: list[int] = []
            while len(picked) < bs:
                if cursor[m] >= len(perms[m]):
                    epoch = len(perms[m]) // len(pool)
                    perm = torch.randperm(len(pool), generator=_generator("ewc", ctx.seed, ctx.stage_index, m, epoch))
                    perms[m] += [pool[int(j)] for j in perm]
                take = min(bs - len(picked), len(perms[m]) - cursor[m])
                picked += perms[m][cursor[m]:cursor[m] + take]
                cursor[m] += take
            plan.append((m, picked))
        return plan

    def compute_fisher(self, ctx: RunContext) -> dict[str, torch.Tensor]:
        """Diagonal Fisher of the current stage's pretext loss on :func:`trained_parameters`."""
        params = trained_parameters(ctx)
        plan = list(enumerate(self.fisher_plan(ctx)))
        mine = plan[ctx.rank::ctx.world_size]
        modules = [ctx.encoder] + [ctx.heads[m] for m in ctx.stage]
        modes = [mod.training for mod in modules]
        for mod in modules:
            mod.eval()

        def loss_fn(item: tuple[int, tuple[str, list[int]]]) -> torch.Tensor:
            k, (m, indices) = item
            batch = ctx.load_batch(m, indices)
            gen = _generator("ewc-mask", ctx.seed, ctx.stage_index, k)
            return ctx.pretext_loss(batch, generator=gen).loss

        try:
            with torch.enable_grad():
                fisher = diagonal_fisher(params, mine, loss_fn)
            self.last_fisher_batches = len(plan)
        finally:
            for mod, mode in zip(modules, modes):
                mod.train(mode)
        return fisher

    # -- engine calls --------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        self._check_and_move(ctx)

    def before_stage(self, ctx: RunContext) -> None:
        self._check_and_move(ctx)

    def loss(self, ctx: RunContext, batch: Batch) -> LossOutput:
        out = ctx.pretext_loss(batch)
        if not self.anchors or self.lam == 0.0:
            return out
        penalty = self.lam * ewc_penalty(shared_parameters(ctx.encoder), self.anchors)
        return LossOutput(out.loss + penalty.to(out.loss.dtype), {**out.metrics, "ewc": penalty.detach()})

    def after_stage(self, ctx: RunContext) -> None:
        stage = ctx.stage_index
        if any(stage in s for s in self.anchor_stages):
            log.info("ewc: stage %d is already consolidated (resumed run)", stage + 1)
            return
        fisher = self.compute_fisher(ctx)
        theta = {n: p.detach().float().clone() for n, p in trained_parameters(ctx).items()}
        if self.mode == "online" and self.anchors:
            # online EWC sums Fishers over one parameter set: the union, zero where a stage did not train
            old_f, old_t = self.anchors[0]
            for n in set(old_f) - set(fisher):
                fisher[n] = torch.zeros_like(old_f[n])
                theta[n] = old_t[n].clone()
            for n in set(fisher) - set(old_f):
                old_f[n] = torch.zeros_like(fisher[n])
        if self.mode == "separate" or not self.anchors:
            self.anchors.append((fisher, theta))
            self.anchor_stages.append([stage])
        else:
            self.anchors = [(online_update(self.anchors[0][0], fisher, self.gamma), theta)]
            self.anchor_stages = [self.anchor_stages[0] + [stage]]
        total = sum(float(f.sum()) for f in fisher.values())
        log.info("ewc: stage %d consolidated (%d minibatches, sum of Fisher %.4g, %d anchors)",
                 stage + 1, self.last_fisher_batches, total, len(self.anchors))

    # -- state ------------------------------------------------------------------------------------
    def _check_and_move(self, ctx: RunContext) -> None:
        params = shared_parameters(ctx.encoder)
        for j, (fisher, theta) in enumerate(self.anchors):
            gone = [n for n in fisher if n not in params and ctx.encoder.parameter_tokenizer(n) is not None]
            if gone:  # a later run without that tokenizer cannot move it: nothing to protect
                log.info("ewc: anchor %d covers %d parameters of tokenizers this run does not build; "
                         "they are not penalised", j, len(gone))
                fisher = {n: f for n, f in fisher.items() if n not in gone}
                theta = {n: t for n, t in theta.items() if n not in gone}
            for name, f in fisher.items():
                if name not in params or tuple(params[name].shape) != tuple(f.shape) \
                        or tuple(theta[name].shape) != tuple(f.shape):
                    have = tuple(params[name].shape) if name in params else "no such parameter"
                    raise CheckpointError(f"strategy ewc: the stored Fisher of {name} has shape "
                                          f"{tuple(f.shape)} but the encoder has {have}; the strategy "
                                          f"state comes from another architecture")
            self.anchors[j] = ({n: f.to(ctx.device) for n, f in fisher.items()},
                               {n: t.to(ctx.device) for n, t in theta.items()})

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        for j, (fisher, theta) in enumerate(self.anchors):
            tensors.update({f"fisher.{j}.{n}": f for n, f in fisher.items()})
            tensors.update({f"theta.{j}.{n}": t for n, t in theta.items()})
        meta = {"format": 1, "mode": self.mode,
                "anchors": [{"stages": list(s)} for s in self.anchor_stages]}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        mode = meta.get("mode", self.mode)
        if mode != self.mode:
            raise ConfigError(f"strategy ewc: the saved state is in mode {mode!r} but the config says "
                              f"{self.mode!r}; set strategy.mode={mode} to continue this run")
        specs = meta.get("anchors", [])
        anchors: list[Anchor] = [({}, {}) for _ in specs]
        for key, value in tensors.items():
            kind, _, rest = key.partition(".")
            j, _, name = rest.partition(".")
            if kind not in ("fisher", "theta") or not j.isdigit() or int(j) >= len(specs):
                raise CheckpointError(f"strategy ewc: unexpected state tensor {key!r} (expected "
                                      f"fisher.<j>.<param> / theta.<j>.<param> for {len(specs)} anchors)")
            anchors[int(j)][0 if kind == "fisher" else 1][name] = value.float()
        for k, (fisher, theta) in enumerate(anchors):
            if set(fisher) != set(theta):
                raise CheckpointError(f"strategy ewc: anchor {k} has Fisher and θ* for different "
                                      f"parameters; the strategy state is corrupted")
        self.anchors = anchors
        self.anchor_stages = [[int(s) for s in spec["stages"]] for spec in specs]
