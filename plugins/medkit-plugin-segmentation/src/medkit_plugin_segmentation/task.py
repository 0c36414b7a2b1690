"""The ``segmentation`` task: 2D/3D UNETR-style decoder on the trunk, Dice + CE, Dice and HD95,
sliding-window inference."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Sequence, Sized, cast

import torch
from torch import nn

from medkit.api import (
    Batch, ConfigError, DataError, LossOutput, TASK_NORMALIZE_MODES as NORMALIZE_MODES, check_max_upsample,
    check_on_error,
)

from medkit_plugin_segmentation.decoder import (FusionSegmentationModel, SegmentationModel, UNETRDecoder,
                                                build_cnn, check_patch)
from medkit_plugin_segmentation.metrics import (SegmentationMeter, channels_to_labels, labels_to_channels,
                                                logits_to_channels)
from medkit_plugin_segmentation.patching import choose_patch
from medkit_plugin_segmentation.progress import WindowProgress, window_count
from medkit_plugin_segmentation.readers import SegReaderOptions, ceil16, read_segmentation

log = logging.getLogger(__name__)


def _spacing(value: Any) -> tuple[float, float, float]:
    out = tuple(float(v) for v in value)
    if len(out) != 3 or min(out) <= 0:
        raise ConfigError(f"task segmentation: spacing must be 3 positive mm values, got {list(value)}")
    return out


class SegmentationTask:
    """Dense prediction of 2D images or 3D volumes from trunk feature maps.

    Args:
        dims, modality: supplied by the engine.
        num_classes: classes including background (``None``: from ``dataset.json`` or the masks).
        class_names: names in index order, background first.
        multilabel: sigmoid channels for the nested regions ``label >= c`` (LiTS: liver incl. tumour,
            tumour) with Dice + BCE, instead of softmax over classes with Dice + CE.
        patch_size: training crop and sliding-window tile (multiples of 16; ``None``: the whole
            image, padded to a multiple of 16, when every image has the same size; otherwise the
            tokenizer's base size clipped to the smallest image, logged).
        feature_size, norm_name, res_block: UNETR decoder settings (16, instance, residual).
        blocks: 0-based trunk blocks feeding the decoder (``None``: 1/3, 7/12, 10/12 and the last).
        fusion: a ``monai.networks.nets`` CNN (e.g. ``BasicUNet``) or ``desd:PATH`` (DeSD's pre-trained
            ResUNet, supplement D Table 3) trained next to the frozen ViT; ``None`` trains the ViT with
            the UNETR decoder.
        fusion_channels: feature channels of the CNN output and of the projected ViT maps.
        overlap, sw_batch_size: sliding-window inference (Gaussian importance map).
        normalize, clip: intensity handling (``auto``: per-channel z-score, as QaTa/GlaS/nnU-Net).
        spacing: 3D only: resample images (trilinear) and masks (nearest) to these mm (x, y, z after
            reorientation to RAS, MONAI ``Spacing``); ``None`` keeps the voxel grid.
        fg_fraction: share of training crops centred on a foreground voxel.
        augment: random flips of every spatial axis in training.
        hd_percentile, empty_hd: HD percentile and the score when exactly one mask is empty.
        val_fraction, test_fraction: automatic split sizes when the data carry no split.
        max_pictures: examples drawn in the overlay picture.
        on_error: ``raise`` or ``skip`` unpaired images and mismatched masks at indexing.
        max_upsample: skip a pair whose image ``spacing`` would resample more than this many times
            finer than its voxels on an axis. ``None`` (the default) keeps every labelled pair and
            logs one warning naming the images resampled more than 10× (pre-training's limit).
    """

    name = "segmentation"
    backbone_output = "maps"
    eval_batch_size = 1
    #: seconds between two progress lines of sliding-window evaluation
    progress_every_s = 10.0

    def __init__(self, dims: int, modality: str, num_classes: int | None = None,
                 class_names: list[str] | None = None, multilabel: bool = False,
                 patch_size: list[int] | None = None, feature_size: int = 16, norm_name: str = "instance",
                 res_block: bool = True, blocks: list[int] | None = None, fusion: str | None = None,
                 fusion_channels: int = 32, overlap: float = 0.5, sw_batch_size: int = 2,
                 normalize: str = "auto", clip: list[float] | None = None, fg_fraction: float = 0.5,
                 augment: bool = True, hd_percentile: float = 95.0, empty_hd: float = 500.0,
                 val_fraction: float = 0.2, test_fraction: float = 0.2, max_pictures: int = 4,
                 on_error: str = "raise", spacing: list[float] | None = None,
                 max_upsample: float | None = None) -> None:
        from monai.losses import DiceCELoss, DiceLoss

        if int(dims) not in (2, 3):
            raise ConfigError(f"task segmentation needs 2D or 3D data, but modality {modality!r} is {dims}D")
        if normalize not in NORMALIZE_MODES:
            raise ConfigError(f"task segmentation: normalize must be one of {', '.join(NORMALIZE_MODES)}")
        self.dims, self.modality = int(dims), str(modality)
        patch = None if patch_size is None else tuple(int(p) for p in patch_size)
        if patch is not None and (len(patch) != self.dims or any(p < 16 or p % 16 for p in patch)):
            raise ConfigError(f"task segmentation: patch_size must be {self.dims} multiples of 16, got {patch_size}")
        if not 0.0 <= float(overlap) < 1.0:
            raise ConfigError(f"task segmentation: overlap must be in [0, 1), got {overlap}")
        self.multilabel, self.patch_size = bool(multilabel), patch
        self.feature_size, self.norm_name, self.res_block = int(feature_size), str(norm_name), bool(res_block)
        self.blocks = None if blocks is None else [int(b) for b in blocks]
        self.fusion, self.fusion_channels = fusion, int(fusion_channels)
        self.overlap, self.sw_batch_size = float(overlap), int(sw_batch_size)
        self.hd_percentile, self.empty_hd = float(hd_percentile), float(empty_hd)
        self.max_pictures = int(max_pictures)
        self.options = SegReaderOptions(
            dims=self.dims, normalize="zscore" if normalize == "auto" else normalize,
            clip=None if clip is None else (float(clip[0]), float(clip[1])), patch_size=patch,
            spacing=None if spacing is None else _spacing(spacing),
            fg_fraction=float(fg_fraction), augment=bool(augment), val_fraction=float(val_fraction),
            test_fraction=float(test_fraction), class_names=list(class_names) if class_names else None,
            num_classes=None if num_classes is None else int(num_classes),
            on_error=check_on_error(on_error, "task segmentation"),
            max_upsample=check_max_upsample(max_upsample, "task segmentation"))
        self.ce_loss = DiceCELoss(to_onehot_y=True, softmax=True)  # Dice + cross-entropy over classes
        self.dice_loss = DiceLoss(sigmoid=True)  # multilabel: per-channel sigmoid Dice ...
        self.bce_loss = nn.BCEWithLogitsLoss()  # ... plus BCE
        self.data_summary: dict[str, Any] = {}  # label values and the patch chosen (recorded with the run)

    # -- data ----------------------------------------------------------------------------------
    def demo_data(self, root: Path) -> Path:
        from medkit_plugin_segmentation.demo import write_demo

        return write_demo(Path(root), self.dims)

    def splits(self, data: Path, *, seed: int) -> dict[str, Any]:
        splits = read_segmentation(Path(data), self.options)
        if self.options.labels is not None:
            self.data_summary = {"labels": self.options.labels.summary(splits["train"].class_names)}
        return splits

    def out_channels(self, class_names: Sequence[str]) -> int:
        return len(class_names) - 1 if self.multilabel else len(class_names)

    def scored_names(self, class_names: Sequence[str]) -> list[str]:
        """The channels Dice/HD95 report: the foreground classes (or regions)."""
        return list(class_names[1:])

    # -- model ---------------------------------------------------------------------------------
    def _map_channels(self, backbone: Any, blocks: Sequence[int]) -> list[int]:
        if getattr(backbone, "kind", "") == "medkit":
            return [int(backbone.embed_dim)] * len(blocks)
        size = self.patch_size or (64,) * self.dims
        was = backbone.training
        backbone.eval()
        with torch.no_grad():
            maps = backbone.feature_maps(torch.zeros(1, int(backbone.in_chans), *size), blocks)
        backbone.train(was)
        return [int(m.shape[1]) for m in maps]

    def build_model(self, backbone: Any, class_names: Sequence[str], *,
                    fusion_cnn: nn.Module | None = None) -> nn.Module:
        """The backbone with a UNETR decoder, or with the fusion CNN (``fusion_cnn``, built by the caller
        for a pre-trained CNN such as ``fusion=desd:PATH``; otherwise the MONAI network ``fusion``)."""
        if int(backbone.dims) != self.dims:
            raise ConfigError(f"task segmentation: the backbone takes {backbone.dims}D inputs but the "
                              f"{self.modality} data are {self.dims}D")
        k = self.out_channels(class_names)
        self._default_patch(backbone)
        if getattr(backbone, "is_segmenter", False):
            return SegmentationModel(backbone, None, [], ())
        patch = check_patch(backbone.patch_size)
        blocks = self.blocks or backbone.default_blocks()
        if len(blocks) != 4 or any(not 0 <= b < backbone.depth for b in blocks):
            raise ConfigError(f"task segmentation: blocks must be 4 indices in 0..{backbone.depth - 1}, got {blocks}")
        channels = self._map_channels(backbone, blocks)
        if self.fusion:
            if fusion_cnn is None and ":" in str(self.fusion):
                raise ConfigError(f"task segmentation: fusion {self.fusion!r} is a pre-trained CNN that medkit "
                                  f"finetune builds; this caller gave none")
            cnn = fusion_cnn if fusion_cnn is not None else build_cnn(
                self.fusion, spatial_dims=self.dims, in_channels=int(backbone.in_chans),
                out_channels=self.fusion_channels)
            return FusionSegmentationModel(backbone, cnn, blocks, patch, spatial_dims=self.dims,
                                           map_channels=channels, out_channels=k,
                                           fusion_channels=self.fusion_channels, norm_name=self.norm_name)
        decoder = UNETRDecoder(self.dims, int(backbone.in_chans), int(backbone.embed_dim), k,
                               map_channels=channels, feature_size=self.feature_size, norm_name=self.norm_name,
                               res_block=self.res_block)
        return SegmentationModel(backbone, decoder, blocks, patch)

    def _default_patch(self, backbone: Any) -> None:
        """Without ``patch_size``, images of different sizes get one derived from the backbone's base
        size and the smallest image (medkit_plugin_segmentation.patching)."""
        scan = self.options.labels
        if self.patch_size is None and scan is not None and scan.shapes:
            self.patch_size = self.options.patch_size = choose_patch(scan.shapes, backbone, self.dims)
        self.data_summary["patch_size"] = list(self.patch_size) if self.patch_size else None

    def collate(self, samples: Sequence[dict[str, Any]], backbone: Any) -> Batch:
        chans = int(backbone.in_chans)
        xs, ms = [], []
        for s in samples:
            x, m = s["input"], s["mask"]
            if x.ndim != self.dims + 1 or int(x.shape[0]) not in (1, chans):
                raise DataError(f"modality {self.modality!r} sample {s['id']!r}: got {list(x.shape)}, expected "
                                f"[{chans}, {'D, ' if self.dims == 3 else ''}H, W] (1-channel is replicated)")
            xs.append(x.expand(chans, *x.shape[1:]).float())
            ms.append(m.long())
        if len({tuple(x.shape) for x in xs}) > 1:
            raise DataError(f"modality {self.modality!r}: samples of one batch differ in size "
                            f"{sorted({tuple(x.shape[1:]) for x in xs})}; set task.patch_size")
        return Batch(modality=self.modality, inputs=torch.stack(xs), labels=torch.stack(ms),
                     ids=[str(s["id"]) for s in samples])

    def loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        logits = model(batch.inputs)  # [B, K, *S]
        labels = batch.labels
        assert labels is not None  # collate always sets them
        if self.multilabel:
            target = labels_to_channels(labels, logits.shape[1] + 1, multilabel=True).float()
            dice, ce = self.dice_loss(logits, target), self.bce_loss(logits, target)
            loss = dice + ce
            return LossOutput(loss, {"dice_loss": float(dice.detach()), "bce": float(ce.detach())})
        if int(labels.max()) >= logits.shape[1]:
            raise DataError(f"batch {batch.ids}: a mask holds label {int(labels.max())} but the head "
                            f"has {logits.shape[1]} classes")
        loss = self.ce_loss(logits, labels[:, None])
        return LossOutput(loss, {"dice_ce": float(loss.detach())})

    # -- evaluation ----------------------------------------------------------------------------
    def predict(self, model: nn.Module, inputs: torch.Tensor, progress: WindowProgress | None = None,
                image_id: str = "") -> torch.Tensor:
        """Logits of a whole image: sliding windows of ``patch_size`` (default: the image rounded up
        to a multiple of 16), 50 % overlap by default, Gaussian importance blending; ``progress``
        counts the windows."""
        from monai.inferers import sliding_window_inference

        roi = self.patch_size or ceil16(inputs.shape[2:])
        net: Any = model
        if progress is not None:
            progress.start_image(image_id, window_count(inputs.shape[2:], roi, self.overlap) * int(inputs.shape[0]))
            net = progress.counted(model)
        out = sliding_window_inference(inputs, roi, self.sw_batch_size, net, overlap=self.overlap,
                                       mode="gaussian")
        return cast(torch.Tensor, out)  # the model returns one tensor, so does the inferer

    def evaluate(self, model: nn.Module, batches: Iterable[Batch], class_names: Sequence[str]) -> dict[str, Any]:
        meter = SegmentationMeter(self.scored_names(class_names), percentile=self.hd_percentile,
                                  empty_value=self.empty_hd)
        examples: list[dict[str, Any]] = []
        n = len(class_names)
        progress = WindowProgress(every_s=self.progress_every_s,
                                  images=len(batches) if isinstance(batches, Sized) else None)
        for batch in batches:
            logits = self.predict(model, batch.inputs, progress, ", ".join(batch.ids[:2]))
            pred = logits_to_channels(logits, multilabel=self.multilabel)
            labels = batch.labels
            assert labels is not None  # collate always sets them
            gt = labels_to_channels(labels, n, multilabel=self.multilabel)
            scored = slice(0, None) if self.multilabel else slice(1, None)
            meter.add(pred[:, scored].cpu(), gt[:, scored].cpu())
            for i in range(len(batch)):
                if len(examples) < self.max_pictures:
                    examples.append({"id": batch.ids[i], "image": batch.inputs[i, 0].cpu().numpy(),
                                     "gt": labels[i].cpu().numpy(),
                                     "pred": channels_to_labels(pred[i:i + 1], multilabel=self.multilabel)[0]
                                     .cpu().numpy()})
        progress.finish()
        metrics = meter.result()
        return {"metrics": metrics, "score": metrics["dice"], "examples": examples}

    def pictures(self, evaluation: dict[str, Any], out_dir: Path, class_names: Sequence[str]) -> list[Path]:
        from medkit_plugin_segmentation.pictures import metrics_title, overlays_png

        title = metrics_title(evaluation["metrics"], evaluation.get("split", "evaluation"), three_d=self.dims == 3)
        return [overlays_png(evaluation["examples"], class_names, Path(out_dir) / "overlays.png", title=title)]
