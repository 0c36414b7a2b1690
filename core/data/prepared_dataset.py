"""Training from prepared data: stored samples in, the modality's own load-time augmentation on top."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medkit.api.batch import TrainViewMixin
from medkit.api.errors import DataError
from medkit.data import remote
from medkit.data.canvas2d import canvas_sample
from medkit.data.prepare_text import check_tokenizer, token_sample
from medkit.data.prepared import PartReader, check_config, read_manifest

log = logging.getLogger(__name__)

#: How a stored array is kept: ``auto`` picks the smallest dtype that loses nothing training uses
#: (8-bit images stay uint8, [0, 1] grey becomes uint16, 3D windows float16); ``float32`` keeps
#: float data exactly as the folder path computes it.
STORE_DTYPES = ("auto", "float32")
_U16 = 65535.0


def encode_image(img: Image.Image, box: tuple[float, float, float, float] | None, store: str,
                 max_side: int = 0) -> dict[str, np.ndarray]:
    """The stored item of a decoded 2D image: the pixels of ``box`` (cut at whole pixels, as
    :func:`medkit.data.image2d.make_view` cuts it) and the box left within them. With
    ``max_side > 0`` a larger region is first resized (bicubic, aspect ratio kept) so that its
    longer side is ``max_side``: training then crops that canvas, as the reference crops the image
    it resized beforehand, instead of the full-resolution region."""
    if box is not None:
        x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
        img = img.crop((x0, y0, int(np.ceil(box[2])), int(np.ceil(box[3]))))
        rest = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    else:
        rest = (0.0, 0.0, float(img.width), float(img.height))
    if max_side > 0 and max(img.width, img.height) > max_side:
        scale = max_side / max(img.width, img.height)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        sx, sy = size[0] / img.width, size[1] / img.height
        img = img.resize(size, Image.Resampling.BICUBIC)
        rest = (rest[0] * sx, rest[1] * sy, rest[2] * sx, rest[3] * sy)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if store == "auto":  # [0, 1] grey: 1/65535 steps, far below what an 8-bit-scale view resolves
            arr = np.rint(np.clip(arr, 0.0, 1.0) * _U16).astype(np.uint16)
    elif img.mode in ("L", "RGB"):
        arr = np.asarray(img, dtype=np.uint8)  # lossless
    else:
        raise DataError(f"prepare: 2D images of mode {img.mode!r} are not supported (expected F, L or RGB)")
    return {"x": np.ascontiguousarray(arr), "box": np.asarray(rest, dtype=np.float64)}


def decode_image(item: dict[str, Any]) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The image and box of a stored 2D item (:func:`encode_image`'s inverse)."""
    arr, box = np.asarray(item["x"]), tuple(float(v) for v in np.asarray(item["box"]))
    if arr.dtype == np.uint16:
        img = Image.fromarray(arr.astype(np.float32) / np.float32(_U16), mode="F")
    elif arr.dtype == np.float32:
        img = Image.fromarray(np.array(arr), mode="F")
    elif arr.dtype == np.uint8 and arr.ndim in (2, 3):
        img = Image.fromarray(np.array(arr), mode="L" if arr.ndim == 2 else "RGB")
    else:
        raise DataError(f"prepared 2D item of dtype {arr.dtype} and shape {arr.shape} is not one medkit writes")
    return img, box  # type: ignore[return-value]


def encode_window(x: torch.Tensor, store: str) -> dict[str, np.ndarray]:
    """The stored item of a finished 3D window ``[C, D, H, W]`` (float16 with ``auto``)."""
    arr = x.detach().to(torch.float32).cpu().numpy()
    return {"x": np.ascontiguousarray(arr.astype(np.float16) if store == "auto" else arr)}


class PreparedDataset(TrainViewMixin):
    """The samples of a prepared folder for a modality built with the run's config.

    It has what the engine reads from a folder dataset (``ids``, ``sources``, ``labels``,
    ``class_names``, ``skipped``, ``load(i, seed)``, ``view(train)``), so the step plan, the split
    by source and the strategies treat it like the folder it was made from.
    """

    def __init__(self, modality: Any, root: str | Path, manifest: dict[str, Any], train: bool) -> None:
        self.modality, self.root, self.train = modality, remote.normalise(root), bool(train)
        self.manifest = manifest
        self.kind = manifest["kind"]
        self.ids = list(manifest["ids"])
        self.sources = list(manifest["sources"])
        if manifest.get("group_keys") is not None:  # the split keys found when it was prepared
            self.group_keys, self.group_kinds = list(manifest["group_keys"]), list(manifest["group_kinds"])
            self.groups, self.duplicates = list(manifest["groups"]), list(manifest["split_keys"]["duplicates"])
            self.key_options = dict(manifest["split_keys"]["options"])
        labels = manifest.get("labels")
        self.labels = None if labels is None else [int(v) for v in labels]
        self.class_names = manifest.get("class_names")
        self.skipped = [tuple(s) for s in manifest.get("skipped", [])]
        self.filtered = [tuple(s) for s in manifest.get("filtered", [])]
        self.reader = PartReader(self.root, manifest["parts"])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def chunk_sizes(self) -> list[int]:
        """Samples per stored chunk in index order: the step plan reads them chunk by chunk
        (:mod:`medkit.engine.chunk_plan`) instead of in a random order that reloads a chunk per sample."""
        return self.reader.chunk_sizes

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Refuse to train prepared token ids with a tokenizer other than the one they were made
        by (the engine calls this once the run's tokenizers are built; other kinds store no ids).

        Raises:
            ConfigError: one line naming the first key that differs.
        """
        if self.kind == "text":
            check_tokenizer(self.manifest["storage"].get("tokenizer", {}), tokenizer, f"prepared data {self.root}",
                            self.modality.name)

    def describe(self) -> list[str]:
        """Summary lines for ``medkit data inspect``."""
        line = (f"prepared by medkit {self.manifest.get('medkit_version')} from {self.manifest.get('data')} "
                f"({len(self.manifest['parts'])} parts, {self.manifest['storage']['dtype']} storage)")
        return [line]

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Sample ``index``; with ``train=True`` and an int ``seed`` the modality's random
        augmentation, drawn from ``seed`` alone exactly as on the folder path."""
        item = self.reader.read(index)
        seed = seed if self.train else None
        label = None if self.labels is None else self.labels[index]
        if self.kind == "text":
            return token_sample(item, self.ids[index], label)
        if self.kind == "image2d":
            if "box" not in item:  # a view canvas (medkit prepare's default): crop + flip in torch
                return canvas_sample(self.modality, item["x"], self.ids[index], label, seed)
            from medkit.data.modality2d import sample_of

            img, box = decode_image(item)
            return sample_of(self.modality, img, box, self.ids[index], label, seed)
        from medkit.data.windows import flip_dims

        arr = np.asarray(item["x"])  # [C, D, H, W], may view the mapped chunk: never written to
        dims = [] if seed is None else flip_dims(seed, self.modality.flip_prob)
        if dims:  # flipped at the stored (float16) size: numpy copies through reversed strides
            arr = np.ascontiguousarray(arr[tuple(slice(None, None, -1) if d in dims else slice(None)
                                                 for d in range(arr.ndim))])
        # float32 (exact from float16) in a tensor of its own: a copy where nothing was flipped
        x = torch.from_numpy(arr).to(torch.float32, copy=not dims)
        sample: dict[str, Any] = {"input": x, "id": self.ids[index]}
        if label is not None:
            sample["label"] = int(label)
        return sample


def open_prepared(modality: Any, path: str | Path, *, train: bool) -> PreparedDataset:
    """The prepared folder ``path`` as a dataset of ``modality``, after checking that it was made
    with the same preprocessing config.

    Raises:
        ConfigError: the first preprocessing key that differs (one line).
        DataError: an unreadable or foreign manifest.
    """
    manifest = read_manifest(path)
    check_config(manifest, modality, f"prepared data {path}")
    ds = PreparedDataset(modality, path, manifest, train)
    log.info("%s: %d prepared samples from %s (%d skipped when prepared)", modality.name, len(ds), path,
             len(ds.skipped))
    return ds
