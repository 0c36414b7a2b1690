"""The pre-training loop's step log: steps stay on the device until a sync point, then become the rows
of ``metrics/steps.jsonl``, the progress updates and the ``step_end`` events, in order.

A sync point comes every ``trainer.log_every`` steps, before every checkpoint and at the end of a
stage; between two, the loop makes no host sync of its own (the GPU runs ahead of Python). The finite
check of a step's loss is deferred to the next sync point: a NaN/Inf loss raises its
:class:`medkit.api.errors.DataError` (naming the first bad step and its samples) up to ``log_every``
steps late, and always before a checkpoint is written, so no committed checkpoint holds a
non-finite step (the run resumes from the last good one).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from medkit.api.errors import DataError
from medkit.engine.step import StepResult, resolve


def bad_on_any_rank(results: Sequence[StepResult]) -> bool:
    """Whether any rank of a distributed run has a non-finite loss among ``results`` (one
    all-reduce of one flag; every rank flushes at the same steps, as the step plan is global).
    Without it the rank that saw the NaN would raise while the others waited in their next
    collective until the process group timed out. ``False`` in a single process."""
    import torch.distributed as dist

    if not results or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return False
    losses = torch.cat([r.losses.reshape(-1).float() for r in results])
    flag = (~torch.isfinite(losses)).any().to(torch.int32).reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class StepLog:
    """The steps since the last sync point.

    Args:
        every: ``trainer.log_every``: a sync point every this many steps (:meth:`due`).
        record: the run's :class:`medkit.engine.checkpoint.RunRecord`; resolved rows are appended
            to its ``pending_steps`` (the next checkpoint writes them to ``metrics/steps.jsonl``).
        report: called ``report(step, metrics)`` for every resolved step, in order (progress and
            the ``step_end`` event), with ``metrics = {"loss", "lr", **the step's metrics}``.
        observe: also called ``observe(row, metrics)`` for every resolved step, after ``report``,
            with the step's row head (``stage``, ``step``, ``modality``, ``role``); default none.
    """

    def __init__(self, every: int, record: Any, report: Callable[[int, dict[str, float]], None],
                 observe: Callable[[dict[str, Any], dict[str, float]], None] | None = None) -> None:
        self.every = max(1, int(every))
        self.record, self.report, self.observe = record, report, observe
        self._pending: list[tuple[StepResult, dict[str, Any], dict[str, Any], float]] = []

    def add(self, result: StepResult, *, stage: int, step: int, modality: str, role: Any, lr: float,
            time_s: float, data_s: float) -> None:
        """One finished step (``stage`` 1-based, ``step`` the steps done in the stage)."""
        head = {"stage": stage, "step": step, "modality": modality, "role": role}
        self._pending.append((result, head, {"time_s": time_s, "data_s": data_s}, lr))

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def flush(self) -> None:
        """Resolve the pending steps (one host sync) into rows, progress and events.

        Raises:
            DataError: a pending step's loss is not finite (nothing of the interval is logged).
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        where = [f"at stage {h['stage']} step {h['step']} " for _, h, _, _ in pending]
        elsewhere = bad_on_any_rank([r for r, _, _, _ in pending])
        values = resolve([r for r, _, _, _ in pending], where)  # raises on the rank that saw it
        if elsewhere:
            first, last = pending[0][1], pending[-1][1]
            raise DataError(f"a loss on another rank was not finite between stage {first['stage']} step "
                            f"{first['step']} and step {last['step']}; that rank's error names the samples "
                            f"(medkit data inspect reports NaN/Inf) — resume from the last checkpoint once "
                            f"they are fixed")
        for (_, head, tail, lr), vals in zip(pending, values):
            metrics = {"loss": vals.pop("loss"), "lr": lr, **vals}
            self.record.pending_steps.append({**head, **metrics, **tail})
            self.report(head["step"], metrics)
            if self.observe is not None:
                self.observe(head, metrics)
