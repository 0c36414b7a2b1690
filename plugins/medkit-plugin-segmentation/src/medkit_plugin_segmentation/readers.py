"""Data layouts of the segmentation task: paired ``images/`` + ``masks/`` folders (2D PNG, or NIfTI)
and the Medical Segmentation Decathlon / nnU-Net layout (``dataset.json``, ``imagesTr``/``labelsTr``)."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from medkit.api import (
    ConfigError, DataError, IMAGE_SUFFIXES, Item, ItemDataset, NIFTI_SUFFIXES, OnError, SPLITS, check_splits,
    file_stem, generator, header_shape, normalize, random_flips, read_array, read_mask, relative_id,
    screen_upsampled, split_three, walk,
)

from medkit_plugin_segmentation.labels import LabelScan, report_labels, scan_labels

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
MASK_DIRS = ("masks", "labels", "mask", "label", "gt")
MASK_SUFFIXES = ("", "_mask", "_seg", "_label", "_gt")
#: nnU-Net's input-channel suffix of an image file name (``case_0000.nii.gz``: channel 0 of ``case``)
CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")


@dataclass
class SegReaderOptions:
    dims: int
    normalize: str = "zscore"
    clip: tuple[float, float] | None = None
    spacing: tuple[float, float, float] | None = None
    patch_size: tuple[int, ...] | None = None
    fg_fraction: float = 0.5
    augment: bool = True
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    class_names: list[str] | None = None
    num_classes: int | None = None
    on_error: str = "raise"
    max_upsample: float | None = None  # None: keep every pair (one warning names images stretched far)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    labels: LabelScan | None = None  #: what :func:`read_segmentation` found in the masks


def ceil16(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(math.ceil(s / 16) * 16) for s in shape)


def crop_pad(x: torch.Tensor, mask: torch.Tensor, roi: Sequence[int], gen: torch.Generator,
             fg_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``roi``-sized window of image ``[C, *S]`` and mask ``[*S]``: padded first where ``S`` is
    smaller (image with its minimum, mask with 0), centred on a random foreground voxel with
    probability ``fg_fraction``, otherwise placed uniformly at random."""
    roi = [int(r) for r in roi]
    pad = []
    for s, r in zip(reversed(x.shape[1:]), reversed(roi)):
        extra = max(0, r - int(s))
        pad += [extra // 2, extra - extra // 2]
    if any(pad):
        x = torch.nn.functional.pad(x, pad, value=float(x.min()))
        mask = torch.nn.functional.pad(mask, pad, value=0)
    shape = x.shape[1:]
    fg = torch.nonzero(mask > 0)
    if len(fg) and float(torch.rand(1, generator=gen)) < fg_fraction:
        centre = fg[int(torch.randint(len(fg), (1,), generator=gen))].tolist()
        start = [min(max(c - r // 2, 0), s - r) for c, r, s in zip(centre, roi, shape)]
    else:
        start = [int(torch.randint(s - r + 1, (1,), generator=gen)) for r, s in zip(roi, shape)]
    window = tuple(slice(a, a + r) for a, r in zip(start, roi))
    return x[(slice(None),) + window], mask[window]


class SegLoader:
    """Reads an (image, mask) pair, checks it and returns ``{"input", "mask", "id"}``; training
    samples are cropped/padded to the patch size and flipped, from the seed alone."""

    def __init__(self, opts: SegReaderOptions) -> None:
        self.opts = opts
        self.class_names: list[str] = []

    def __call__(self, item: Item, seed: int | None, train: bool) -> dict[str, Any]:
        image_path, mask_path = item.source
        arr = read_array(image_path, spacing=self.opts.spacing)
        mask = read_mask(mask_path, spacing=self.opts.spacing)
        if arr.ndim != self.opts.dims + 1:
            raise DataError(f"{image_path}: the image is {arr.ndim - 1}D but this task reads {self.opts.dims}D data")
        if tuple(arr.shape[1:]) != tuple(mask.shape):
            raise DataError(f"{mask_path}: mask shape {list(mask.shape)} differs from its image {image_path} "
                            f"shape {list(arr.shape[1:])}; they must be the same grid")
        top = int(mask.max()) if mask.size else 0
        if top >= len(self.class_names):
            raise DataError(f"{mask_path}: label value {top} is outside the class list "
                            f"[{', '.join(self.class_names)}] (values 0..{len(self.class_names) - 1}); fix the "
                            f"mask or set task.num_classes / task.class_names")
        x = normalize(arr, self.opts.normalize, clip=self.opts.clip)
        m = torch.from_numpy(mask)
        if train and seed is not None:  # seed None: the whole image (evaluation of any split)
            roi = self.opts.patch_size or ceil16(m.shape)
            gen = generator(seed)
            x, m = crop_pad(x, m, roi, gen, self.opts.fg_fraction)
            if self.opts.augment:
                x, m = random_flips([x, m], gen, self.opts.dims)
        return {"input": x.contiguous(), "mask": m.contiguous(), "id": item.id}


def _pair(image: Path, mask: Path, root: Path, opts: SegReaderOptions) -> Item | None:
    a, b = header_shape(image), header_shape(mask)
    if a != b:
        _errors(opts).bad(str(mask), f"mask shape {list(b)} differs from its image {image} shape {list(a)}; "
                                     f"they must be the same grid")
        return None
    return Item(id=relative_id(image, root), source=(image, mask), origin=str(image))


def _errors(opts: SegReaderOptions) -> OnError:
    return OnError(opts.on_error, "task segmentation", "fix the data or set task.on_error=skip",
                   skipped=opts.skipped)


def _suffixes(dims: int) -> tuple[str, ...]:
    return NIFTI_SUFFIXES if dims == 3 else IMAGE_SUFFIXES


def read_pairs(folder: Path, root: Path, opts: SegReaderOptions, image_dir: str = "images",
               mask_dirs: Sequence[str] = MASK_DIRS) -> list[Item]:
    """``folder/images/<name>`` with ``folder/masks/<name>`` (or ``labels/``; the mask may end in
    ``_mask``, ``_seg``, ``_label`` or ``_gt``); paired by file name, an image named with nnU-Net's
    channel suffix (``case_0000``) goes with the mask ``case`` (other channels are left out, logged)."""
    images = folder / image_dir
    mask_dir = next((folder / d for d in mask_dirs if (folder / d).is_dir()), None)
    if mask_dir is None:
        wanted = "masks/ (or labels/)" if tuple(mask_dirs) == MASK_DIRS else " or ".join(f"{d}/" for d in mask_dirs)
        raise DataError(f"{folder}: found {image_dir}/ but no {wanted} folder next to it")
    masks = {file_stem(p): p for p in walk(mask_dir, _suffixes(opts.dims), recursive=False, skipped=opts.skipped)[1]}
    items, extra = [], []
    for image in walk(images, _suffixes(opts.dims), recursive=False, skipped=opts.skipped)[1]:
        stem = file_stem(image)
        mask = next((masks[stem + s] for s in MASK_SUFFIXES if stem + s in masks), None)
        channel = CHANNEL_SUFFIX.search(stem)
        if mask is None and channel is not None and stem[:channel.start()] in masks:
            if int(channel.group(1)) != 0:
                extra.append(image.name)
                continue
            mask = masks[stem[:channel.start()]]
        if mask is None:
            _errors(opts).bad(str(image), f"no mask named {stem}.* in {mask_dir}; add it")
            continue
        item = _pair(image, mask, root, opts)
        if item is not None:
            items.append(item)
    if extra:
        log.warning("%s: %d file(s) of further input channels (%s%s) left out: medkit reads channel _0000 "
                    "of each case", images, len(extra), ", ".join(extra[:3]), ", ..." if len(extra) > 3 else "")
    return items


def _label_names(labels: Any, path: Path) -> list[str] | None:
    """Class names in index order from MSD (``{"0": "background"}``) or nnU-Net v2 (``{"bg": 0}``)."""
    if not isinstance(labels, dict) or not labels:
        return None
    try:
        if all(str(k).isdigit() for k in labels):
            pairs = {int(k): str(v) for k, v in labels.items()}
        else:
            pairs = {int(v): str(k) for k, v in labels.items()}
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: 'labels' must map indices to names (or names to integer indices)") from exc
    if sorted(pairs) != list(range(len(pairs))):
        raise DataError(f"{path}: label indices {sorted(pairs)} are not 0..{len(pairs) - 1}")
    return [pairs[i] for i in range(len(pairs))]


def read_msd(root: Path, opts: SegReaderOptions) -> tuple[list[Item], list[str] | None]:
    """``dataset.json`` with a ``training`` list of ``{"image", "label"}`` (MSD), or nnU-Net v2
    ``imagesTr/<case>_0000<ending>`` + ``labelsTr/<case><ending>``."""
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path}: not valid JSON ({exc})") from exc
    names = _label_names(meta.get("labels"), meta_path)
    items = []
    if isinstance(meta.get("training"), list) and meta["training"]:
        for k, entry in enumerate(meta["training"]):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise DataError(f"{meta_path}: training entry {k} needs 'image' and 'label' paths")
            image, mask = (root / entry["image"]).resolve(), (root / entry["label"]).resolve()
            for p in (image, mask):
                if not p.is_file():
                    raise DataError(f"{meta_path}: training entry {k} names {p}, which does not exist")
            item = _pair(image, mask, root.resolve(), opts)
            if item is not None:
                items.append(item)
        return items, names
    ending = str(meta.get("file_ending", ".nii.gz"))
    for mask in sorted((root / "labelsTr").glob(f"*{ending}")):
        case = mask.name[: -len(ending)]
        image = root / "imagesTr" / f"{case}_0000{ending}"
        if not image.is_file():
            raise DataError(f"{mask}: no image {image.name} in {root / 'imagesTr'}")
        item = _pair(image, mask, root, opts)
        if item is not None:
            items.append(item)
    return items, names


def gather(data: Path, opts: SegReaderOptions) -> tuple[dict[str, list[Item]], dict[str, str], list[str] | None]:
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"{data}: segmentation data must be a folder (images/ + masks/, or dataset.json with "
                        f"imagesTr/ and labelsTr/)")
    if (data / "dataset.json").is_file():
        items, names = read_msd(data, opts)
        return {"all": items}, {"all": str(data / "dataset.json")}, names
    if (data / "images").is_dir():
        return {"all": read_pairs(data, data, opts)}, {"all": str(data / "images")}, None
    if (data / "imagesTr").is_dir() and (data / "labelsTr").is_dir():  # MSD / nnU-Net without dataset.json
        log.info("%s: no dataset.json; pairing imagesTr/ and labelsTr/ by file name, classes from the "
                 "label values", data)
        return ({"all": read_pairs(data, data, opts, "imagesTr", ("labelsTr",))}, {"all": str(data / "imagesTr")},
                None)
    split_dirs = {SPLIT_ALIASES[p.name.lower()]: p for p in data.iterdir()
                  if p.is_dir() and p.name.lower() in SPLIT_ALIASES and (p / "images").is_dir()}
    if "train" in split_dirs:
        return ({s: read_pairs(p, data, opts) for s, p in split_dirs.items()},
                {s: str(p / "images") for s, p in split_dirs.items()}, None)
    raise DataError(f"{data}: the folder is empty for segmentation: expected images/ + masks/ (or labels/), "
                    f"imagesTr/ + labelsTr/, train|val|test/{{images,masks}}/, or an MSD/nnU-Net dataset.json")


def read_segmentation(data: Path, opts: SegReaderOptions) -> dict[str, ItemDataset]:
    """Train/val/test datasets of (image, mask) pairs; every dataset's ``class_names`` includes
    ``background`` at index 0."""
    opts.skipped = []
    raw, origin, names = gather(Path(data), opts)
    if "all" in raw:
        pool = raw.pop("all")
        if not pool:
            raise DataError(f"{origin['all']}: the data are empty (no image with a mask)")
        idx = split_three([it.id for it in pool], val_fraction=opts.val_fraction,
                          test_fraction=opts.test_fraction, origin=origin["all"])
        for s in SPLITS:
            raw[s] = [pool[i] for i in idx[s]]
            origin.setdefault(s, origin["all"])
    if opts.spacing is not None:  # resampled far finer than their voxels: kept with a warning, unless limited
        kept = {id(it) for it in screen_upsampled(
            [it for s in SPLITS for it in raw.get(s, [])], lambda it: Path(it.source[0]), owner="task segmentation",
            dims=opts.dims, input_size=None, spacing=opts.spacing, limit=opts.max_upsample, skipped=opts.skipped)}
        raw = {s: [it for it in raw.get(s, []) if id(it) in kept] for s in SPLITS}
    where = str(data)
    scan = scan_labels([it for s in SPLITS for it in raw.get(s, [])], spacing=opts.spacing, where=where)
    opts.labels = scan
    if opts.class_names:
        names = list(opts.class_names)
    if names is None:
        n = int(opts.num_classes) if opts.num_classes else max(scan.top, 1) + 1
        names = ["background", "foreground"] if n == 2 else ["background"] + [f"class{c}" for c in range(1, n)]
    if opts.num_classes is not None and len(names) != int(opts.num_classes):
        raise ConfigError(f"{data}: the data define {len(names)} classes ({', '.join(names)}) but "
                          f"task.num_classes is {opts.num_classes}")
    if len(names) < 2:
        raise ConfigError(f"{data}: segmentation needs background and at least one class, got {names}")
    report_labels(scan, names, where)
    loader = SegLoader(opts)
    loader.class_names = list(names)
    splits = {s: ItemDataset(raw.get(s, []), loader, list(names), train=s == "train", name=s,
                             skipped=list(opts.skipped)) for s in SPLITS}
    return check_splits(splits, origin)

