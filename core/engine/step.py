"""The one training-step primitive: pre-training, fine-tuning and strategies' own retraining all step
through :class:`TrainStep` (forward under autocast, backward over micro-batches, the strategy points
``after_backward`` / ``after_optimizer_step``, clipping, the optimizer step).

A step leaves its loss and metrics on the device (:class:`StepResult`); :func:`resolve` turns the
results of any number of steps into Python floats with one device-to-host copy, and is where a
deferred finiteness check raises. The pre-training loop resolves every ``trainer.log_every`` steps,
before each checkpoint and at the end of a stage (:mod:`medkit.engine.steplog`); fine-tuning and
strategies' own loops check and read every step.
"""

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
from medkit.models.precision import amp_dtype, autocast, check_amp_device

#: A function from one batch to its loss (the strategy's ``loss``, a task's ``loss``...).
LossFn = Callable[[Batch], LossOutput]


@dataclass
class StepResult:
    """What one optimizer step did, still on the device: reading it is a host sync (:func:`resolve`).

    Attributes:
        loss: the mean loss over the micro-batches (detached, float32, on the device).
        losses: each micro-batch's loss, ``[n_micro]`` (detached): the finiteness check reads it.
        parts: each micro-batch's metrics as the loss function returned them (floats, or detached
            tensors that stay on the device until resolved).
        described: each micro-batch's samples, in words (for the non-finite-loss error).
    """

    loss: torch.Tensor
    losses: torch.Tensor
    parts: list[dict[str, Any]] = field(default_factory=list)
    described: list[str] = field(default_factory=list)

    def values(self) -> dict[str, float]:
        """``{"loss": ..., **metrics}`` as floats (one host sync); raises like :func:`resolve`."""
        return resolve([self])[0]


def _nonfinite_error(value: float, described: str, where: str) -> DataError:
    return DataError(f"the loss is {value} {where}on {described}; check those files (medkit data inspect "
                     f"reports NaN/Inf) or lower optim.lr (resume with medkit run --resume RUN optim.lr=...)")


def resolve(results: Sequence[StepResult], where: Sequence[str] | None = None) -> list[dict[str, float]]:
    """The steps' losses and metrics as Python floats, in order, with one device-to-host copy.

    Each result becomes ``{"loss": mean loss, **metrics}``; a metric is the mean of its micro-batch
    values (a non-finite metric is left out). The values are those ``float()`` of each tensor gives.

    Args:
        results: the steps, oldest first.
        where: a label per step for the error (``"at stage 1 step 7 "``); default none.

    Raises:
        DataError: a step's loss is NaN or infinite: the first such step, naming its samples.
    """
    tensors: list[torch.Tensor] = []
    for r in results:
        tensors += [r.loss.reshape(1), r.losses.reshape(-1)]
        tensors += [v.detach().reshape(1) for part in r.parts for v in part.values() if isinstance(v, torch.Tensor)]
    flat = torch.cat([t.to(torch.float64) for t in tensors]).tolist() if tensors else []
    out, pos = [], 0
    for i, r in enumerate(results):
        loss, n = flat[pos], r.losses.numel()
        micro, pos = flat[pos + 1:pos + 1 + n], pos + 1 + n
        bad = next((k for k, v in enumerate(micro) if not math.isfinite(v)), None)
        if bad is not None:
            raise _nonfinite_error(micro[bad], r.described[bad], where[i] if where else "")
        sums: dict[str, float] = {}
        for part in r.parts:
            for name, value in part.items():
                if isinstance(value, torch.Tensor):
                    value, pos = flat[pos], pos + 1
                sums[name] = sums.get(name, 0.0) + float(value)
        out.append({"loss": loss, **{k: v / n for k, v in sums.items() if math.isfinite(v)}})
    return out


class TrainStep:
    """One optimizer step over one or more micro-batches (gradient accumulation).

    Args:
        optimizer: the optimizer; every group's ``lr`` is set to ``lr · lr_scale`` on each call.
        params: the trainable parameters (clipping and the finite check use them).
        device: where batches go (``non_blocking`` copies; pin memory in the loader on CUDA).
        clip_grad: max global gradient norm, or ``None``.
        amp: ``trainer.amp``: ``False`` (fp32) or bf16 (``True``, ``"bf16"``, ``torch.bfloat16``):
            the forward under bf16 autocast on ``device``'s type, the loss, gradients, weights and
            optimizer in fp32 (:mod:`medkit.models.precision`; no loss scaling is needed for bf16).
            Refused with a :class:`ConfigError` where the device cannot run it.
        forward: calls the loss function the way the run needs (through the DDP wrapper in a
            distributed run, see :class:`medkit.engine.distributed.LossModule`); default: directly.
        no_sync: a context in which gradients are not reduced (DDP's ``no_sync`` for every
            micro-batch but the last); default: none.
        after_backward / after_optimizer_step: the strategy points (PackNet masks gradients, then
            re-imposes frozen weights).
        describe: names the samples of a batch for the non-finite-loss error.
        reducer: the fixed-order backward (``trainer.reduce=ordered``,
            :class:`medkit.engine.ordered.OrderedReduce`): the micro-batches are then this rank's
            reduction groups, reduced with every rank's in one fixed order; default: none (the
            micro-batches' mean loss, reduced by ``forward``'s wrapper).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, params: Sequence[torch.nn.Parameter],
                 device: torch.device, clip_grad: float | None = None, amp: bool | str | torch.dtype | None = False,
                 forward: Callable[[LossFn, Batch], LossOutput] | None = None,
                 no_sync: Callable[[], Any] | None = None,
                 after_backward: Callable[[], None] | None = None,
                 after_optimizer_step: Callable[[], None] | None = None,
                 describe: Callable[[Batch], str] | None = None, reducer: Any = None) -> None:
        self.optimizer, self.params, self.device = optimizer, list(params), device
        self.clip_grad = float(clip_grad) if clip_grad else None
        self.amp_dtype = amp_dtype(amp)
        check_amp_device(self.amp_dtype, device)
        self.amp = self.amp_dtype is not None
        self.forward = forward or (lambda fn, batch: fn(batch))
        self.no_sync = no_sync or nullcontext
        self.after_backward, self.after_optimizer_step = after_backward, after_optimizer_step
        self.describe = describe or (lambda b: f"{b.modality} batch {', '.join(b.ids[:4])}")
        self.reducer = reducer

    def set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def __call__(self, loss_fn: LossFn, batches: Batch | Sequence[Batch], *, lr: float | None = None,
                 check_finite: bool = True, sync: bool = True) -> StepResult:
        """Run the step. ``batches``: one batch, or the micro-batches of one accumulated step (their
        losses are averaged, so ``k`` micro-batches of ``B`` equal one batch of ``k·B`` for a loss
        that is a mean over equally sized samples).

        Args:
            check_finite: refuse a NaN/Inf loss (a :class:`DataError` naming the batch's samples).
            sync: check each micro-batch's loss before its backward (a host sync each; the weights
                never see the bad step). ``False``: no host sync at all; the check happens when the
                result is read (:func:`resolve`, :meth:`StepResult.values`), after the optimizer step.
        """
        micro = [batches] if isinstance(batches, Batch) else list(batches)
        if lr is not None:
            self.set_lr(lr)
        self.optimizer.zero_grad(set_to_none=True)
        if self.reducer is not None:
            done = self.reducer.backward(self, loss_fn, micro, check_finite=check_finite, sync=sync)
            self._update()
            return StepResult(loss=done.loss, losses=done.losses, parts=done.parts, described=done.described)
        total = torch.zeros((), device=self.device)
        losses, parts, described = [], [], []
        for k, batch in enumerate(micro):
            batch = batch.to(self.device)
            sync_grads = nullcontext() if k == len(micro) - 1 else self.no_sync()
            with sync_grads:
                with autocast(self.device, self.amp_dtype), sample_streams(batch.seeds):
                    out = self.forward(loss_fn, batch)
                loss = out.loss.float()  # the backward starts from an fp32 loss (bf16 or not)
                if check_finite and sync and not bool(torch.isfinite(loss)):
                    raise _nonfinite_error(float(loss.detach()), self.describe(batch), "")
                (loss / len(micro)).backward()
            total = total + loss.detach()
            losses.append(loss.detach() if check_finite else torch.zeros((), device=loss.device))
            parts.append({name: v.detach() if isinstance(v, torch.Tensor) else v for name, v in out.metrics.items()})
            described.append(self.describe(batch) if check_finite and not sync else "")
        self._update()
        return StepResult(loss=total / len(micro), losses=torch.stack(losses), parts=parts, described=described)

    def _update(self) -> None:
        """After the backward: the strategy point, clipping, the optimizer step, the strategy point."""
        if self.after_backward is not None:
            self.after_backward()
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
        self.optimizer.step()
        if self.after_optimizer_step is not None:
            self.after_optimizer_step()
