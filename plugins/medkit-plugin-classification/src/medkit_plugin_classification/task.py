"""The ``classification`` task: 1D/2D/3D inputs, the heads of supplement A.1, cross-entropy, ACC/AUC/F1."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from medkit.api import (
    Batch, ConfigError, DataError, LossOutput, TASK_NORMALIZE_MODES as NORMALIZE_MODES, check_max_upsample,
    check_on_error,
)

from medkit_plugin_classification.heads import Classifier, build_head, resolve_head
from medkit_plugin_classification.metrics import classification_metrics, confusion_matrix, selection_score
from medkit_plugin_classification.readers import ReaderOptions, read_classification

log = logging.getLogger(__name__)


def _floats(value: Any, n: int | None, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    out = tuple(float(v) for v in value)
    if n is not None and len(out) != n:
        raise ConfigError(f"task classification: {name} must have {n} values, got {list(value)}")
    return out


class ClassificationTask:
    """Sentence, image or volume classification on the shared encoder (or an external backbone).

    Args:
        dims, modality: supplied by the engine (the data's dimension and modality).
        head: ``one_layer`` (fc_norm LN(eps 1e-6) → Linear D→C), ``two_layer`` ([fc_norm] → Linear
            D→D → LN → GELU → Linear D→C) or ``auto`` (two layers for report/CT/MRI, one for
            X-ray/pathology; otherwise by dims).
        pooling: ``mean`` over patch tokens (text: over non-padding tokens) or ``cls``.
        fc_norm: LayerNorm before the two-layer head (``None``: images yes, text no, as the reference).
        num_classes: expected number of classes (checked against the data; ``None``: from the data).
        class_names: the class list in index order; any other label is an error.
        input_size: resize every image/volume to this size (``None``: keep; all must then match).
        normalize: ``auto`` (2D: [0, 1] by the integer range; 3D: z-score), ``none``, ``unit``,
            ``minmax`` or ``zscore``.
        clip: intensity window applied before ``normalize`` (CT: ``[-1024, 325]`` as RICORD).
        spacing: 3D only: resample every volume to these mm (x, y, z after reorientation to RAS,
            MONAI ``Spacing``) before ``input_size``; ``None`` keeps the voxel grid.
        augment: random flips in training (2D horizontal, 3D every axis).
        val_fraction, test_fraction: automatic split sizes when the data carry no split.
        label_smoothing: cross-entropy label smoothing.
        on_error: ``raise`` or ``skip`` malformed rows and missing files.
        max_upsample: skip an image or volume that ``input_size`` (and ``spacing``) would stretch
            more than this many times on an axis. ``None`` (the default) keeps every labelled
            file and logs one warning naming those stretched more than pre-training allows (4×
            in 2D, 10× in 3D) with their factors.
    """

    name = "classification"
    backbone_output = "pooled"
    eval_batch_size = None

    def __init__(self, dims: int, modality: str, head: str = "auto", pooling: str = "mean",
                 fc_norm: bool | None = None, num_classes: int | None = None,
                 class_names: list[str] | None = None, input_size: list[int] | None = None,
                 normalize: str = "auto", clip: list[float] | None = None, augment: bool = True,
                 val_fraction: float = 0.2, test_fraction: float = 0.2, label_smoothing: float = 0.0,
                 on_error: str = "raise", spacing: list[float] | None = None,
                 max_upsample: float | None = None) -> None:
        if int(dims) not in (1, 2, 3):
            raise ConfigError(f"task classification: dims must be 1, 2 or 3, got {dims}")
        if normalize not in NORMALIZE_MODES:
            raise ConfigError(f"task classification: normalize must be one of {', '.join(NORMALIZE_MODES)}")
        check_on_error(on_error, "task classification")
        self.dims, self.modality = int(dims), str(modality)
        self.head_kind = resolve_head(head, self.modality, self.dims)
        self.pooling = pooling
        self.fc_norm = (self.dims > 1) if fc_norm is None else bool(fc_norm)
        self.label_smoothing = float(label_smoothing)
        size = _floats(input_size, None if self.dims == 1 else self.dims, "input_size")
        if normalize == "auto":
            normalize = "unit" if self.dims == 2 else "zscore"
        self.options = ReaderOptions(
            dims=self.dims, input_size=None if size is None or self.dims == 1 else tuple(int(s) for s in size),
            normalize=normalize, clip=_floats(clip, 2, "clip"), augment=bool(augment),  # type: ignore[arg-type]  # length n checked
            spacing=_floats(spacing, 3, "spacing"),  # type: ignore[arg-type]  # length n checked
            val_fraction=float(val_fraction), test_fraction=float(test_fraction),
            class_names=list(class_names) if class_names else None,
            num_classes=None if num_classes is None else int(num_classes), on_error=on_error,
            max_upsample=check_max_upsample(max_upsample, "task classification"))

    # -- data ----------------------------------------------------------------------------------
    def demo_data(self, root: Path) -> Path:
        from medkit_plugin_classification.demo import write_demo

        return write_demo(Path(root), self.dims)

    def splits(self, data: Path, *, seed: int) -> dict[str, Any]:
        return read_classification(Path(data), self.options)

    def out_channels(self, class_names: Sequence[str]) -> int:
        return len(class_names)

    # -- model ---------------------------------------------------------------------------------
    def build_model(self, backbone: Any, class_names: Sequence[str]) -> nn.Module:
        if int(backbone.dims) != self.dims:
            raise ConfigError(f"task classification: the backbone takes {backbone.dims}D inputs but the "
                              f"{self.modality} data are {self.dims}D")
        head = build_head(self.head_kind, int(backbone.embed_dim), len(class_names), fc_norm=self.fc_norm)
        return Classifier(backbone, head, self.pooling)

    def collate(self, samples: Sequence[dict[str, Any]], backbone: Any) -> Batch:
        parts = backbone.collate(samples, self.modality)
        labels = []
        for s in samples:
            if not isinstance(s.get("label"), int) or s["label"] < 0:
                raise DataError(f"sample {s.get('id')!r} has no class label")
            labels.append(int(s["label"]))
        return Batch(modality=self.modality, inputs=parts["inputs"], attention_mask=parts.get("attention_mask"),
                     labels=torch.tensor(labels, dtype=torch.long), ids=[str(s["id"]) for s in samples])

    def loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        logits = model(batch.inputs, batch.attention_mask)  # [B, C]
        assert batch.labels is not None  # collate always sets them
        loss = nn.functional.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing)
        acc = float((logits.argmax(dim=1) == batch.labels).float().mean())
        return LossOutput(loss, {"ce": float(loss.detach()), "train_acc": acc})

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], class_names: Sequence[str]) -> dict[str, Any]:
        probs, labels, ids = [], [], []
        for batch in batches:
            logits = model(batch.inputs, batch.attention_mask)
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
            assert batch.labels is not None  # collate always sets them
            labels.append(batch.labels.cpu())
            ids += batch.ids
        if not probs:
            raise DataError("the evaluation split is empty")
        p = torch.cat(probs).numpy()
        y = torch.cat(labels).numpy()
        metrics = classification_metrics(y, p, class_names)
        return {"metrics": metrics, "score": selection_score(metrics),
                "confusion": confusion_matrix(y, p.argmax(axis=1), len(class_names)).tolist(),
                "ids": ids, "labels": y.tolist(), "predictions": p.argmax(axis=1).tolist()}

    def pictures(self, evaluation: dict[str, Any], out_dir: Path, class_names: Sequence[str]) -> list[Path]:
        from medkit_plugin_classification.pictures import confusion_png

        m = evaluation["metrics"]
        split = evaluation.get("split", "evaluation")
        title = f"ACC {m['acc']:.3f}  AUC {m['auc']:.3f}  F1 {m['f1']:.3f}"
        cm = np.asarray(evaluation["confusion"], dtype=np.int64)
        return [confusion_png(cm, class_names, Path(out_dir) / "confusion_matrix.png", title=title, split=split)]
