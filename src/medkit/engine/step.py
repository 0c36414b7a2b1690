"""The one training-step primitive: pre-training, fine-tuning and strategies' own retraining all step
through :class:`TrainStep` (forward under autocast, backward over micro-batches, the strategy points
``after_backward`` / ``after_optimizer_step``, clipping, the optimizer step)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from medkit.api.batch import Batch
from medkit.api.context import LossOutput
from medkit.api.errors import DataError
from medkit.api.randomness import sample_streams

#: A function from one batch to its loss (the strategy's ``loss``, a task's ``loss``...).
LossFn = Callable[[Batch], LossOutput]


@dataclass
class StepResult:
    """What one optimizer step did: the mean loss over its micro-batches and their metrics."""

    loss: torch.Tensor  # detached, on the device: no host sync until someone reads it
    metrics: dict[str, float] = field(default_factory=dict)


class TrainStep:
    """One optimizer step over one or more micro-batches (gradient accumulation).

    Args:
        optimizer: the optimizer; every group's ``lr`` is set to ``lr · lr_scale`` on each call.
        params: the trainable parameters (clipping and the finite check use them).
        device: where batches go (``non_blocking`` copies; pin memory in the loader on CUDA).
        clip_grad: max global gradient norm, or ``None``.
        amp: bf16 autocast (CPU and CUDA).
        forward: calls the loss function the way the run needs (through the DDP wrapper in a
            distributed run, see :class:`medkit.engine.distributed.LossModule`); default: directly.
        no_sync: a context in which gradients are not reduced (DDP's ``no_sync`` for every
            micro-batch but the last); default: none.
        after_backward / after_optimizer_step: the strategy points (PackNet masks gradients, then
            re-imposes frozen weights).
        describe: names the samples of a batch for the non-finite-loss error.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, params: Sequence[torch.nn.Parameter],
                 device: torch.device, clip_grad: float | None = None, amp: bool = False,
                 forward: Callable[[LossFn, Batch], LossOutput] | None = None,
                 no_sync: Callable[[], Any] | None = None,
                 after_backward: Callable[[], None] | None = None,
                 after_optimizer_step: Callable[[], None] | None = None,
                 describe: Callable[[Batch], str] | None = None) -> None:
        self.optimizer, self.params, self.device = optimizer, list(params), device
        self.clip_grad = float(clip_grad) if clip_grad else None
        self.amp = bool(amp)
        self.forward = forward or (lambda fn, batch: fn(batch))
        self.no_sync = no_sync or nullcontext
        self.after_backward, self.after_optimizer_step = after_backward, after_optimizer_step
        self.describe = describe or (lambda b: f"{b.modality} batch {', '.join(b.ids[:4])}")

    def set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def __call__(self, loss_fn: LossFn, batches: Batch | Sequence[Batch], *, lr: float | None = None,
                 check_finite: bool = True) -> StepResult:
        """Run the step. ``batches``: one batch, or the micro-batches of one accumulated step (their
        losses are averaged, so ``k`` micro-batches of ``B`` equal one batch of ``k·B`` for a loss
        that is a mean over equally sized samples)."""
        micro = [batches] if isinstance(batches, Batch) else list(batches)
        if lr is not None:
            self.set_lr(lr)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        sums: dict[str, float] = {}
        for k, batch in enumerate(micro):
            batch = batch.to(self.device)
            sync = nullcontext() if k == len(micro) - 1 else self.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp), \
                        sample_streams(batch.seeds):
                    out = self.forward(loss_fn, batch)
                loss = out.loss.float()
                if check_finite and not bool(torch.isfinite(loss)):
                    raise DataError(f"the loss is {float(loss)} on {self.describe(batch)}; check those files "
                                    f"(medkit data inspect reports NaN/Inf) or lower optim.lr "
                                    f"(resume with medkit run --resume RUN optim.lr=...)")
                (loss / len(micro)).backward()
            total = total + loss.detach()
            for name, value in out.metrics.items():
                sums[name] = sums.get(name, 0.0) + float(value)
        if self.after_backward is not None:
            self.after_backward()
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
        self.optimizer.step()
        if self.after_optimizer_step is not None:
            self.after_optimizer_step()
        mean = total / len(micro)
        return StepResult(loss=mean, metrics={k: v / len(micro) for k, v in sums.items()
                                              if not isinstance(v, float) or math.isfinite(v)})
