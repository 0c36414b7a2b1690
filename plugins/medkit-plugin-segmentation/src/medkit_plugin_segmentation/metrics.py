"""Segmentation metrics: Dice and HD95 per class with MONAI, and the empty-mask rules.

Empty masks, per sample and class:

* Dice: both prediction and ground truth empty → 1; exactly one empty → 0 (MONAI ``compute_dice``
  with ``ignore_empty=False``).
* HD95: both empty → 0; exactly one empty → ``empty_value`` (500 voxels, the reference's value);
  otherwise MONAI ``compute_hausdorff_distance(percentile=95)``: the larger of the two directed
  95th-percentile surface distances, in voxels (spacing 1).
"""

from __future__ import annotations

import warnings

import torch

EMPTY_HD = 500.0


def labels_to_channels(label: torch.Tensor, num_classes: int, *, multilabel: bool) -> torch.Tensor:
    """``[B, *S]`` class indices → ``[B, K, *S]`` bool: one-hot over all ``K = num_classes`` classes,
    or, with ``multilabel``, the nested regions ``label >= c`` for ``c = 1..num_classes-1`` (LiTS:
    liver incl. tumour, then tumour)."""
    if multilabel:
        return torch.stack([label >= c for c in range(1, num_classes)], dim=1)
    return torch.stack([label == c for c in range(num_classes)], dim=1)


def logits_to_channels(logits: torch.Tensor, *, multilabel: bool) -> torch.Tensor:
    """``[B, K, *S]`` logits → bool channels: sigmoid ≥ 0.5 per channel, or one-hot of the argmax."""
    if multilabel:
        return logits >= 0.0  # sigmoid(x) >= 0.5
    k = logits.shape[1]
    arg = logits.argmax(dim=1)
    return torch.stack([arg == c for c in range(k)], dim=1)


def channels_to_labels(channels: torch.Tensor, *, multilabel: bool) -> torch.Tensor:
    """Inverse of :func:`labels_to_channels` for display: ``[B, K, *S]`` → ``[B, *S]``."""
    if multilabel:
        return channels.long().sum(dim=1)
    return channels.long().argmax(dim=1)


def dice_per_class(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Dice of every channel of ``[B, K, *S]`` bool masks, ``[B, K]``."""
    from monai.metrics import compute_dice

    return compute_dice(pred.float(), gt.float(), include_background=True, ignore_empty=False)


def hd95_per_class(pred: torch.Tensor, gt: torch.Tensor, *, percentile: float = 95.0,
                   empty_value: float = EMPTY_HD) -> torch.Tensor:
    """HD95 (voxels) of every channel of ``[B, K, *S]`` bool masks, ``[B, K]``, with the empty rules."""
    from monai.metrics import compute_hausdorff_distance

    b, k = pred.shape[:2]
    out = torch.zeros(b, k, dtype=torch.float64)
    for i in range(b):
        for c in range(k):
            p, g = pred[i:i + 1, c:c + 1], gt[i:i + 1, c:c + 1]
            pe, ge = not bool(p.any()), not bool(g.any())
            if pe and ge:
                out[i, c] = 0.0
            elif pe or ge:
                out[i, c] = float(empty_value)
            else:
                with warnings.catch_warnings():  # MONAI 1.5+ warns about its own deprecated argument
                    warnings.simplefilter("ignore", FutureWarning)
                    out[i, c] = float(compute_hausdorff_distance(p.float(), g.float(), include_background=True,
                                                                 percentile=percentile)[0, 0])
    return out


class SegmentationMeter:
    """Accumulates per-sample, per-class Dice and HD95; ``names`` label the scored channels."""

    def __init__(self, names: list[str], *, percentile: float = 95.0, empty_value: float = EMPTY_HD) -> None:
        self.names, self.percentile, self.empty_value = names, percentile, empty_value
        self.dice: list[torch.Tensor] = []
        self.hd: list[torch.Tensor] = []

    def add(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """``pred``/``gt``: ``[B, K, *S]`` bool over the scored channels only."""
        self.dice.append(dice_per_class(pred, gt).double().cpu())
        self.hd.append(hd95_per_class(pred, gt, percentile=self.percentile, empty_value=self.empty_value))

    def result(self) -> dict[str, float]:
        """``dice`` and ``hd95`` (means over samples and classes) and ``dice/<class>``, ``hd95/<class>``."""
        if not self.dice:
            return {"dice": float("nan"), "hd95": float("nan")}
        dice = torch.cat(self.dice).mean(dim=0)  # [K]
        hd = torch.cat(self.hd).mean(dim=0)
        out = {"dice": float(dice.mean()), "hd95": float(hd.mean())}
        for c, name in enumerate(self.names):
            out[f"dice/{name}"] = float(dice[c])
            out[f"hd95/{name}"] = float(hd[c])
        return out
