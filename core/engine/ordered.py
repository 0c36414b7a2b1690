"""Gradient reduction in a fixed order (``trainer.reduce=ordered``): the same bits whatever the number of processes.

A step's global batch is cut into ``N`` groups of a fixed size (``trainer.reduce_group`` samples,
independent of the world size). Each group runs its own forward and backward, so every group has
the same shapes in every layout and (on one thread per rank) the same gradient bits. The group
gradients are then summed by one fixed pairwise tree over the global group order (:func:`tree_sum`):
a rank holding a contiguous block of groups sums the tree nodes inside its block
(:func:`node_cover`), the ranks exchange those node sums with ``all_gather``, and every rank finishes
the same tree in the same order. A ring all-reduce (DDP's) sums ranks in an order that depends on
the world size, and a backward over a rank's whole batch sums over a number of rows that does too;
neither happens here.

Everything else a step reports is combined the same way: the logged loss is the tree sum of the
group losses divided by ``N``, every group's metrics reach every rank in group order, and the
global RNG inside a group's loss is seeded from the group's first sample seed (so a strategy's
batch-level draws, e.g. mixup partners, are drawn within the group whichever rank runs it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from medkit.api.batch import Batch
from medkit.api.errors import ConfigError
from medkit.api.randomness import sample_key, sample_streams
from medkit.models.precision import autocast

log = logging.getLogger(__name__)

#: ``trainer.reduce`` values: the fixed-order tree or DDP's bucketed all-reduce.
REDUCE_MODES = ("ordered", "allreduce")
#: Groups per global batch when ``trainer.reduce_group`` is 0: the largest power of two up to
#: this that divides the global batch (so world sizes 1, 2, 4 and 8 split it into whole blocks).
DEFAULT_GROUPS = 8
#: The draw index that derives a group's RNG seed from its first sample's seed (no sample stream
#: ever draws this far).
_GROUP_DRAW = 1 << 30

T = TypeVar("T")
#: One gradient per parameter (``None``: the parameter got none).
Grads = list["torch.Tensor | None"]


def group_size(global_batch: int, reduce_group: int = 0, accum_steps: int = 1) -> int:
    """Samples per reduction group: ``reduce_group``, or (0) the default group of a batch: the batch
    over the largest power of two up to :data:`DEFAULT_GROUPS` that divides it.

    With ``accum_steps`` = k > 1 a step is k accumulated micro-batches of ``global_batch / k``
    samples and the groups are theirs (the default group of a micro-batch, or ``reduce_group``
    when it divides one): k micro-batches of whole groups are just more groups in the same fixed
    tree, so accumulation changes only the group size, and only where it is the default. A
    function of the global batch and ``accum_steps`` alone, so a resume under another world size
    keeps it.

    Raises:
        ConfigError: ``reduce_group`` does not divide the global batch (or a micro-batch), or
            ``accum_steps`` does not divide the global batch.
    """
    accum = int(accum_steps)
    if accum > 1 and global_batch % accum:
        raise ConfigError(f"trainer.accum_steps={accum} does not divide the global batch of {global_batch} samples "
                          f"under trainer.reduce=ordered; choose a divisor of {global_batch}")
    micro = global_batch // max(accum, 1)
    if reduce_group:
        if reduce_group < 1 or micro % reduce_group:
            what = f"the global batch of {global_batch}" if accum <= 1 else \
                f"the micro-batch of {micro} (the global batch of {global_batch} over trainer.accum_steps={accum})"
            raise ConfigError(f"trainer.reduce_group={reduce_group} does not divide {what} samples; choose a "
                              f"divisor of {micro} (or 0 for the default)")
        return int(reduce_group)
    groups = 1
    while groups * 2 <= DEFAULT_GROUPS and micro % (groups * 2) == 0:
        groups *= 2
    return micro // groups


def check_layout(global_batch: int, group: int, world_size: int) -> int:
    """The groups each rank runs (``global_batch / group / world_size``).

    Raises:
        ConfigError: the groups cannot be dealt to ``world_size`` ranks in whole blocks.
    """
    groups = global_batch // group
    if groups % world_size:
        raise ConfigError(f"trainer.reduce=ordered: the global batch of {global_batch} samples makes {groups} "
                          f"group(s) of {group}, which {world_size} processes cannot share equally; set "
                          f"trainer.reduce_group to a divisor of {global_batch // world_size} (the same value on "
                          f"every resume), or trainer.reduce=allreduce (not bit-identical across world sizes)")
    return groups // world_size


def split_point(lo: int, hi: int) -> int:
    """Where the tree splits the node ``[lo, hi)`` (halves; the left half is the smaller one)."""
    return lo + (hi - lo) // 2


def node_cover(lo: int, hi: int, first: int, end: int) -> list[tuple[int, int]]:
    """The largest tree nodes under ``[lo, hi)`` that lie inside ``[first, end)``, in order: what a
    rank holding groups ``first..end-1`` can sum on its own. For a power-of-two world size over a
    power-of-two number of groups this is one node (the rank's whole block)."""
    if end <= lo or hi <= first or hi <= lo:
        return []
    if first <= lo and hi <= end:
        return [(lo, hi)]
    mid = split_point(lo, hi)
    return node_cover(lo, mid, first, end) + node_cover(mid, hi, first, end)


def tree_sum(lo: int, hi: int, node: Callable[[int, int], T | None], add: Callable[[T, T], T]) -> T:
    """The sum of the leaves ``lo..hi-1`` over the fixed pairwise tree: ``node(lo, hi)`` gives a
    node's value where it is known (a leaf must be known), otherwise the node is ``add`` of its
    two halves. Visits leaves in order and holds one partial sum per tree level."""
    known = node(lo, hi)
    if known is not None:
        return known
    if hi - lo < 2:
        raise ValueError(f"leaf {lo} of the reduction tree has no value")
    mid = split_point(lo, hi)
    left = tree_sum(lo, mid, node, add)
    return add(left, tree_sum(mid, hi, node, add))


def add_grads(a: Grads, b: Grads) -> Grads:
    """``a + b`` per parameter (a ``None`` adds nothing): one tree node from its two halves."""
    both = [i for i, (x, y) in enumerate(zip(a, b)) if x is not None and y is not None]
    out = [x if y is None else y for x, y in zip(a, b)]
    if both:
        left = [x for x, y in zip(a, b) if x is not None and y is not None]
        right = [y for x, y in zip(a, b) if x is not None and y is not None]
        for i, s in zip(both, torch._foreach_add(left, right)):
            out[i] = s
    return out


def gather_rows(rows: torch.Tensor, world_size: int) -> torch.Tensor:
    """``rows`` ``[k, ...]`` of every rank stacked in rank order, ``[world_size · k, ...]`` (the same
    ``k`` on every rank); the rows themselves in one process."""
    if world_size < 2:
        return rows
    parts = [torch.empty_like(rows) for _ in range(world_size)]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


@dataclass
class Reduced:
    """What the ordered backward of one step leaves besides the gradients (the same on every rank)."""

    loss: torch.Tensor  #: the tree sum of the group losses over the number of groups
    losses: torch.Tensor  #: every group's loss in global order ``[N]``
    parts: list[dict[str, Any]]  #: every group's metrics, in global order
    described: list[str]  #: each group's samples in words (another rank's groups by index)


class OrderedReduce:
    """The fixed-order backward of :class:`medkit.engine.step.TrainStep` (``trainer.reduce=ordered``).

    Args:
        params: the trainable parameters, the same list in the same order on every rank.
        rank / world_size: this process and the number of processes.
        groups_per_rank: the groups each rank runs per step (:func:`check_layout`).
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], *, rank: int, world_size: int,
                 groups_per_rank: int) -> None:
        self.params = list(params)
        self.rank, self.world_size, self.per_rank = int(rank), int(world_size), int(groups_per_rank)
        self.total = self.per_rank * self.world_size
        self.sizes = [p.numel() for p in self.params]

    # -- one group -----------------------------------------------------------------------------
    def _take_grads(self) -> Grads:
        """The parameters' gradients as they are (``None`` where a parameter got none), cleared
        from the parameters for the next group."""
        grads = [None if p.grad is None else p.grad.detach() for p in self.params]
        for p in self.params:
            p.grad = None
        return grads

    def _group(self, step: Any, loss_fn: Callable[[Batch], Any], batch: Batch, *, check: bool,
               outputs: list[tuple[torch.Tensor, dict[str, Any], str]]) -> Grads:
        batch = batch.to(step.device)
        cuda = step.device.type == "cuda"
        devices = [torch.cuda.current_device() if step.device.index is None else step.device.index] if cuda else []
        with torch.random.fork_rng(devices=devices):
            if batch.seeds:  # batch-level draws of the loss (mixup partners...) belong to the group
                torch.manual_seed(sample_key(int(batch.seeds[0]), _GROUP_DRAW) % (2**63))
            with autocast(step.device, step.amp_dtype), sample_streams(batch.seeds):
                out = step.forward(loss_fn, batch)
            loss = out.loss.float()
            if check and not bool(torch.isfinite(loss)):
                from medkit.engine.step import _nonfinite_error

                raise _nonfinite_error(float(loss.detach()), step.describe(batch), "")
            loss.backward()
        outputs.append((loss.detach(), dict(out.metrics), step.describe(batch)))
        return self._take_grads()

    # -- the step ------------------------------------------------------------------------------
    def backward(self, step: Any, loss_fn: Callable[[Batch], Any], groups: Sequence[Batch], *,
                 check_finite: bool = True, sync: bool = True) -> Reduced:
        """Run this rank's groups, reduce their gradients over every rank in the fixed tree order and
        leave the mean gradient (tree sum / N) in each parameter's ``grad`` (``None`` where no group
        produced one).

        Raises:
            ConfigError: this rank got another number of groups than the layout says.
        """
        if len(groups) != self.per_rank:
            raise ConfigError(f"trainer.reduce=ordered expected {self.per_rank} group(s) per process, got "
                              f"{len(groups)}; the batch size and trainer.reduce_group disagree")
        first = self.rank * self.per_rank
        outputs: list[tuple[torch.Tensor, dict[str, Any], str]] = []
        pending = iter(groups)

        def leaf(lo: int, hi: int) -> Grads | None:  # a leaf runs its group when the tree reaches it
            if hi - lo != 1:
                return None
            return self._group(step, loss_fn, next(pending), check=check_finite and sync, outputs=outputs)

        mine = {node: tree_sum(*node, leaf, add_grads)
                for node in node_cover(0, self.total, first, first + self.per_rank)}
        known = mine if self.world_size == 1 else self._exchange(mine, step.device)
        total = tree_sum(0, self.total, lambda lo, hi: known.get((lo, hi)), add_grads)
        scale = 1.0 / self.total
        for p, g in zip(self.params, total):
            # in the parameter's own memory layout (a channels-last position table stays one), as
            # autograd leaves a gradient: the optimizer's foreach kernels then see what they always do
            p.grad = None if g is None else torch.mul(g, scale, out=torch.empty_like(p))
        return self._reduce_outputs(outputs, first)

    def _exchange(self, mine: dict[tuple[int, int], Grads], device: torch.device) -> dict[tuple[int, int], Grads]:
        """Every rank's node sums, from one ``all_gather`` of flat rows (each node's gradients, zeros
        for ``None``, then one presence flag per parameter; every rank sends as many rows)."""
        covers = [node_cover(0, self.total, r * self.per_rank, (r + 1) * self.per_rank) for r in range(self.world_size)]
        width = max(len(c) for c in covers)
        dtype = self.params[0].dtype
        rows = []
        nothing: Grads = [None] * len(self.params)
        sent: list[Grads] = [*mine.values(), *[nothing] * (width - len(mine))]
        for grads in sent:
            pieces = [torch.zeros(p.numel(), dtype=dtype, device=device) if g is None else g.reshape(-1)
                      for p, g in zip(self.params, grads)]
            pieces.append(torch.tensor([g is not None for g in grads], dtype=dtype, device=device))
            rows.append(torch.cat(pieces))
        every = gather_rows(torch.stack(rows), self.world_size)
        present = every[:, sum(self.sizes):].tolist()  # one host read of every node's presence flags
        known: dict[tuple[int, int], Grads] = {}
        for r, cover in enumerate(covers):
            for j, node in enumerate(cover):
                row, flags, offset = every[r * width + j], present[r * width + j], 0
                got: Grads = []
                for p, n, flag in zip(self.params, self.sizes, flags):
                    got.append(row[offset:offset + n].view(p.shape) if flag else None)
                    offset += n
                known[node] = got
        return known

    def _reduce_outputs(self, outputs: list[tuple[torch.Tensor, dict[str, Any], str]], first: int) -> Reduced:
        names = sorted(outputs[0][1]) if outputs else []
        device = outputs[0][0].device if outputs else torch.device("cpu")
        rows = torch.stack([torch.stack([loss.double().reshape(())] + [
            torch.as_tensor(metrics[k], dtype=torch.float64, device=device).detach().reshape(())
            for k in names]) for loss, metrics, _ in outputs])  # [per_rank, 1 + metrics]
        every = gather_rows(rows, self.world_size)  # [N, 1 + metrics], global group order
        losses = every[:, 0].float()
        loss = tree_sum(0, self.total, lambda lo, hi: losses[lo] if hi - lo == 1 else None, torch.add) / self.total
        parts = [{k: every[i, 1 + j] for j, k in enumerate(names)} for i in range(self.total)]
        described = [outputs[i - first][2] if first <= i < first + self.per_rank else f"group {i + 1} of {self.total}"
                     for i in range(self.total)]
        return Reduced(loss=loss, losses=losses, parts=parts, described=described)


def reduce_record(mode: str, reduce_group: int, global_batch: int, accum_steps: int = 1) -> dict[str, Any]:
    """What a manifest records of the reduction (``trainer.reduce``, ``trainer.reduce_group``,
    ``trainer.accum_steps``): ``{"mode"}``, and for ``ordered`` the ``"group"`` size that decides the bits."""
    if mode != "ordered":
        return {"mode": mode}
    return {"mode": mode, "group": group_size(global_batch, reduce_group, accum_steps)}
