"""Readers and helpers shared by downstream tasks: 2D images, NIfTI volumes, masks, splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medkit.api.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: ``none`` keeps raw values; ``unit`` divides by the integer type's maximum (0..255 → [0, 1]);
#: ``minmax`` maps each image to [0, 1]; ``zscore`` standardises each channel. ``auto`` is
#: resolved by the task (classification 2D: unit, otherwise zscore).
NORMALIZE_MODES = ("auto", "none", "unit", "minmax", "zscore")
SPLITS = ("train", "val", "test")


def has_suffix(path: Path | str, suffixes: Sequence[str]) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in suffixes)


def file_stem(path: Path | str) -> str:
    """File name without its image suffix (``case_01.nii.gz`` → ``case_01``)."""
    name = Path(path).name
    for s in NIFTI_SUFFIXES + IMAGE_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return Path(name).stem


def image_dims(path: Path | str) -> int:
    """2 for PNG/JPEG/BMP/TIFF, 3 for NIfTI; :class:`DataError` for anything else."""
    if has_suffix(path, NIFTI_SUFFIXES):
        return 3
    if has_suffix(path, IMAGE_SUFFIXES):
        return 2
    raise DataError(f"{path}: not an image this task reads; expected {', '.join(IMAGE_SUFFIXES)} (2D) "
                    f"or {', '.join(NIFTI_SUFFIXES)} (3D)")


def read_image(path: Path) -> np.ndarray:
    """A 2D image as ``[C, H, W]`` in its stored dtype (grey → 1 channel, colour → 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA", "1"):
                img = img.convert("RGB" if img.mode not in ("LA", "1") else "L")
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode the image ({exc}); expected a readable "
                        f"{'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} file") from exc
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
    raise DataError(f"{path}: image has shape {list(arr.shape)}; expected [H, W] or [H, W, C]")


def read_volume(path: Path) -> np.ndarray:
    """A NIfTI volume ``(x, y, z[, c])`` as ``[C, Z, X, Y]`` (MedCoSS's (1, z, x, y) order)."""
    try:
        import nibabel as nib

        arr = np.asarray(nib.load(str(path)).dataobj)
    except ImportError as exc:
        raise ConfigError("reading NIfTI needs nibabel: pip install nibabel") from exc
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds
        raise DataError(f"{path}: cannot read the NIfTI file ({exc}); expected a valid .nii/.nii.gz") from exc
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise DataError(f"{path}: NIfTI has shape {list(arr.shape)}; expected (x, y, z) or (x, y, z, c)")
    return np.ascontiguousarray(arr.transpose(3, 2, 0, 1))


def read_array(path: Path) -> np.ndarray:
    """``[C, H, W]`` or ``[C, Z, X, Y]`` depending on the file type."""
    return read_volume(path) if image_dims(path) == 3 else read_image(path)


def read_mask(path: Path) -> np.ndarray:
    """A label map ``[*S]`` of non-negative ints. Masks holding only 0 and 255 (binary PNGs) become
    0/1; colour masks use their first channel."""
    arr = read_array(path)[0]
    if np.issubdtype(arr.dtype, np.floating):
        rounded = np.rint(arr)
        if not np.allclose(arr, rounded, atol=1e-3):
            raise DataError(f"{path}: mask holds non-integer values; expected class indices")
        arr = rounded
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise DataError(f"{path}: mask holds negative value {int(arr.min())}; expected class indices >= 0")
    values = np.unique(arr)
    if values.size and values.max() == 255 and set(values.tolist()) <= {0, 255}:
        arr = (arr == 255).astype(np.int64)
    return arr


def normalize(arr: np.ndarray, mode: str, *, clip: Sequence[float] | None = None) -> torch.Tensor:
    """``arr`` as float32 with ``clip`` applied first, then ``mode`` (see :data:`NORMALIZE_MODES`)."""
    if mode not in NORMALIZE_MODES or mode == "auto":
        raise ConfigError(f"normalize mode {mode!r} is not one of {', '.join(NORMALIZE_MODES[1:])}")
    top = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else None
    x = torch.from_numpy(np.asarray(arr, dtype=np.float32).copy())
    if clip is not None:
        low, high = (float(v) for v in clip)
        x = x.clamp(low, high)
    if mode == "unit":
        if top is not None and clip is None:
            return x / top
        mode = "minmax"
    if mode == "minmax":
        low, high = x.min(), x.max()
        return (x - low) / (high - low).clamp_min(1e-8)
    if mode == "zscore":
        flat = x.reshape(x.shape[0], -1)
        mean = flat.mean(dim=1).reshape(-1, *([1] * (x.ndim - 1)))
        std = flat.std(dim=1, unbiased=False).reshape(-1, *([1] * (x.ndim - 1)))
        return (x - mean) / std.clamp_min(1e-8)
    return x


def resize(x: torch.Tensor, size: Sequence[int], *, nearest: bool = False) -> torch.Tensor:
    """Resize ``[C, *S]`` to ``size`` (bilinear/trilinear, or nearest for label maps)."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[1:]) == size:
        return x
    if len(size) != x.ndim - 1:
        raise ConfigError(f"size {list(size)} has {len(size)} axes but the image is {x.ndim - 1}D")
    if nearest:
        out = torch.nn.functional.interpolate(x[None].float(), size=size, mode="nearest")[0]
        return out.to(x.dtype)
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return torch.nn.functional.interpolate(x[None], size=size, mode=mode, align_corners=False,
                                           antialias=len(size) == 2)[0]


def _score(sample_id: str) -> float:
    return int(hashlib.sha1(sample_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_three(ids: Sequence[str], *, val_fraction: float, test_fraction: float,
                origin: str) -> dict[str, list[int]]:
    """Deterministic train/val/test split by a hash of each id (the seed never moves a sample).

    Every split gets at least one sample.

    Raises:
        DataError: naming ``origin`` when there are fewer than three samples.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in "
                          f"(0, 1) with a sum below 1")
    if len(ids) < 3:
        raise DataError(f"{origin}: {len(ids)} sample(s) cannot be split into non-empty train/val/test "
                        f"splits; add data (at least 3 samples) or provide official split folders/files")
    order = sorted(range(len(ids)), key=lambda i: _score(ids[i]))
    n_test = max(1, int(round(test_fraction * len(ids)))) if test_fraction > 0 else 0
    n_val = max(1, int(round(val_fraction * len(ids))))
    n_val = min(n_val, len(ids) - n_test - 1)
    test = sorted(order[:n_test])
    val = sorted(order[n_test:n_test + n_val])
    train = sorted(order[n_test + n_val:])
    return {"train": train, "val": val, "test": test}


@dataclass
class Item:
    """One sample before loading: its id, what to read, its label and the file it came from."""

    id: str
    source: Any
    label: Any = None
    origin: str = ""


@dataclass
class ItemDataset:
    """A split of a downstream dataset: ``load(i, seed)`` calls ``loader(item, seed, train)``."""

    items: list[Item]
    loader: Callable[[Item, int | None, bool], dict[str, Any]]
    class_names: list[str] | None
    train: bool = False
    name: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    @property
    def labels(self) -> list[int] | None:
        if self.items and all(isinstance(it.label, int) for it in self.items):
            return [int(it.label) for it in self.items]
        return None

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        return self.loader(self.items[index], seed if self.train else None, self.train)


def check_splits(splits: dict[str, ItemDataset], origin: dict[str, str]) -> dict[str, ItemDataset]:
    """Refuse an empty split with a :class:`DataError` naming the file or folder it came from."""
    for name in SPLITS:
        if name not in splits or len(splits[name]) == 0:
            where = origin.get(name, "the data")
            raise DataError(f"{where}: the {name!r} split is empty; every split needs at least one "
                            f"sample (add data to it, or remove the split files to split automatically)")
    return splits


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) % (2**63))


def random_flips(tensors: Sequence[torch.Tensor], gen: torch.Generator, spatial_dims: int,
                 p: float = 0.5) -> list[torch.Tensor]:
    """Flip every tensor ``[..., *S]`` along each of the last ``spatial_dims`` axes with prob ``p``
    (the same draws for all tensors, e.g. an image and its mask)."""
    out = list(tensors)
    for axis in range(1, spatial_dims + 1):
        if float(torch.rand(1, generator=gen)) < p:
            out = [t.flip(-axis) for t in out]
    return out
