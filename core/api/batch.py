"""Samples, batches and data sources: the records that flow from datasets through tokenizers to the engine."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

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
        so :meth:`to` with ``non_blocking`` really overlaps the copy to the GPU."""
        pin = (lambda t: None if t is None else t.pin_memory())
        return replace(self, inputs=self.inputs.pin_memory(), attention_mask=pin(self.attention_mask),
                       labels=pin(self.labels))

    def to(self, device: torch.device | str) -> Batch:
        move = (lambda t: None if t is None else t.to(device, non_blocking=True))
        return replace(self, inputs=self.inputs.to(device, non_blocking=True),
                       attention_mask=move(self.attention_mask),
                       labels=move(self.labels))


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
