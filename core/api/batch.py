"""Samples, batches and data sources: the records that flow from datasets through tokenizers to the engine."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import torch

from medkit.api.errors import DataError
from medkit.api.views import TrainViewMixin as TrainViewMixin  # its home is torch-free

#: One sample as a modality's dataset returns it: ``{"input": tensor or str, "id": str,
#: "label": int (optional)}``. Images are ``[C, H, W]`` or ``[C, D, H, W]``; text is a ``str``.
Sample = dict[str, Any]


@dataclass
class Batch:
    """One homogeneous batch: every sample is of the same modality.

    Attributes:
        modality: modality name.
        inputs: ``[B, C, H, W]``, ``[B, C, D, H, W]`` or token ids ``[B, L]``.
        attention_mask: ``[B, L]`` with 1 for real tokens (text only).
        labels: ``[B]`` class labels where the data carry them (``-1`` = none).
        ids: the sample ids.
        role: ``"current"`` (this stage's data) or ``"buffer"`` (rehearsed earlier data).
        seeds: one seed per sample, keyed by its place in the global batch (training batches of
            the engine): per-sample randomness is drawn from them (:mod:`medkit.api.randomness`).
    """

    modality: str
    inputs: torch.Tensor
    attention_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    ids: list[str] = field(default_factory=list)
    role: str = "current"
    seeds: list[int] | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def split(self, parts: int) -> list[Batch]:
        """``parts`` consecutive micro-batches of equal size (gradient accumulation)."""
        n = len(self)
        if parts < 1 or n % parts:
            raise DataError(f"a batch of {n} {self.modality} samples cannot be split into {parts} equal "
                            f"micro-batches; make trainer.batch_size a multiple of trainer.accum_steps")
        size = n // parts

        def cut(t: torch.Tensor | None, k: int) -> torch.Tensor | None:
            return None if t is None else t[k * size:(k + 1) * size]

        return [replace(self, inputs=self.inputs[k * size:(k + 1) * size], attention_mask=cut(self.attention_mask, k),
                        labels=cut(self.labels, k), ids=self.ids[k * size:(k + 1) * size],
                        seeds=None if self.seeds is None else self.seeds[k * size:(k + 1) * size])
                for k in range(parts)]

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (a ``DataLoader`` with ``pin_memory=True`` calls this),
        so :meth:`to` with ``non_blocking`` really overlaps the copy to the GPU. Grey inputs sent as
        one channel (:func:`stack_inputs`) are pinned as one channel and stay a view."""
        pin = (lambda t: None if t is None else t.pin_memory())
        return replace(self, inputs=_on_compact(self.inputs, lambda t: t.pin_memory(), contiguous=False),
                       attention_mask=pin(self.attention_mask), labels=pin(self.labels))

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device``. Grey inputs sent as one channel (:func:`stack_inputs`) are
        moved as one channel and made the contiguous ``[B, C, *S]`` there (on the CPU too), so
        what the model sees does not depend on how the batch travelled."""
        move = (lambda t: None if t is None else t.to(device, non_blocking=True))
        return replace(self, inputs=_on_compact(self.inputs, lambda t: t.to(device, non_blocking=True)),
                       attention_mask=move(self.attention_mask),
                       labels=move(self.labels))


def _is_compact(t: torch.Tensor) -> bool:
    """``[B, C, *S]`` whose channels are one channel repeated as a view (stride 0)."""
    return t.ndim >= 3 and int(t.shape[1]) > 1 and t.stride(1) == 0


def _on_compact(t: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], contiguous: bool = True) -> torch.Tensor:
    """``fn(t)``, applied to one channel of a compact ``t`` and expanded again after (contiguous
    when ``contiguous``)."""
    if not _is_compact(t):
        return fn(t)
    out = fn(t[:, :1]).expand(t.shape)
    return out.contiguous() if contiguous else out


class _Stacking(threading.local):
    alloc: Callable[[tuple[int, ...], torch.dtype], torch.Tensor | None] | None = None
    compact: bool = False


_stacking = _Stacking()


@contextlib.contextmanager
def stacking_into(alloc: Callable[[tuple[int, ...], torch.dtype], torch.Tensor | None],
                  compact: bool) -> Iterator[None]:
    """While active (in this thread), :func:`stack_inputs` writes into ``alloc(shape, dtype)``
    (``None``: a new tensor) and, with ``compact``, keeps grey batches at one channel. The engine's
    DataLoader workers use it; a consumer of such batches must move them with :meth:`Batch.to`."""
    before = (_stacking.alloc, _stacking.compact)
    _stacking.alloc, _stacking.compact = alloc, bool(compact)
    try:
        yield
    finally:
        _stacking.alloc, _stacking.compact = before


def stack_inputs(tensors: Sequence[torch.Tensor], channels: int | None = None) -> torch.Tensor:
    """Stack samples ``[c, *S]`` of one size and dtype into ``[B, C, *S]``, ``C = channels`` (a
    1-channel sample is repeated; ``None``: ``c``; a grey sample may also be one channel repeated
    ``C`` times as a view, ``x.expand(C, ...)``): what a tokenizer's ``collate`` stacks image
    inputs with. In the engine's DataLoader workers the batch goes into a reused shared-memory
    buffer, and a batch of grey samples stays one channel, repeated as a view (it crosses to the
    main process at a third of the size; :meth:`Batch.to` makes it whole). Elsewhere it is
    ``torch.stack`` (in a plain DataLoader worker, through torch's ``default_collate``, which
    stacks into shared memory). The values are the same on every path.
    """
    from torch.utils.data import default_collate

    if not tensors:
        raise DataError("stack_inputs: no samples to stack")
    first = tensors[0]
    c = int(first.shape[0]) if channels is None else int(channels)
    # grey: one channel, or c channels that are one repeated as a view (stride 0)
    grey = c > 1 and all(int(t.shape[0]) == 1 or (int(t.shape[0]) == c and t.stride(0) == 0) for t in tensors)
    alloc = _stacking.alloc
    if grey and _stacking.compact:
        parts: Sequence[torch.Tensor] = [t[:1] for t in tensors]
    else:
        parts = [t.expand(c, *t.shape[1:]) if int(t.shape[0]) != c else t for t in tensors]
    buf = None if alloc is None else alloc((len(parts), *(int(v) for v in parts[0].shape)), first.dtype)
    # no buffer given: default_collate's torch.stack (into new shared memory in a DataLoader worker)
    out = default_collate(list(parts)) if buf is None else torch.stack(list(parts), out=buf)
    return out.expand(out.shape[0], c, *out.shape[2:]) if grey and _stacking.compact else out


def collate(samples: Sequence[Sample], modality: str, tokenizer: Any, role: str = "current") -> Batch:
    """Build a :class:`Batch` through the tokenizer's ``collate`` (which checks shapes)."""
    if not samples:
        raise DataError(f"cannot build an empty batch for modality {modality!r}")
    parts = tokenizer.collate(samples, modality)
    labels = None
    if any("label" in s for s in samples):
        labels = torch.tensor([int(s.get("label", -1)) for s in samples], dtype=torch.long)
    return Batch(modality=modality, inputs=parts["inputs"], attention_mask=parts.get("attention_mask"),
                 labels=labels, ids=[str(s["id"]) for s in samples], role=role)


@dataclass
class Source:
    """One data stream of a stage.

    Attributes:
        modality: modality name.
        indices: indices into the modality's training dataset that this stream draws from.
        weight: relative share of steps (the engine uses ``len(indices)`` when ``None``).
        role: ``"current"`` or ``"buffer"``.
    """

    modality: str
    indices: list[int]
    weight: float | None = None
    role: str = "current"

    @property
    def share(self) -> float:
        return float(len(self.indices) if self.weight is None else self.weight)
