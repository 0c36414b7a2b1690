"""Deterministic labelled demo data: PubMed-RCT text (1D), class-per-folder PNGs (2D) and NIfTI
volumes listed in a ``labels.csv`` (3D) — written in the formats the readers read."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

import numpy as np

from medkit.api import atomic_write_bytes, atomic_write_text

MARKER = ".medkit-demo-complete"
RCT_LABELS = ("BACKGROUND", "OBJECTIVE", "METHODS", "RESULTS", "CONCLUSIONS")
_PHRASES = {
    "BACKGROUND": ["previous studies have suggested", "little is known about", "is a common cause of"],
    "OBJECTIVE": ["we aimed to assess", "the purpose of this study was to evaluate", "to determine whether"],
    "METHODS": ["patients were randomly assigned to", "we enrolled adults and measured", "data were collected from"],
    "RESULTS": ["the rate was significantly lower in", "there was no difference between", "mean scores improved by"],
    "CONCLUSIONS": ["in conclusion", "these findings suggest that", "further trials are needed to confirm"],
}
_TOPICS = ["pneumonia", "chest pain", "heart failure", "the lung nodule", "pleural effusion", "fracture"]
SHAPES_2D = ("disk", "square", "stripes")
SHAPES_3D = ("sphere", "slab")


def _done(root: Path) -> bool:
    return (root / MARKER).exists()


def write_pubmed(root: Path, abstracts: dict[str, int] | None = None) -> Path:
    """``train.txt``/``dev.txt``/``test.txt``: each abstract has one sentence per RCT role."""
    rng = random.Random(20)
    for split, n in (abstracts or {"train": 12, "dev": 4, "test": 4}).items():
        lines = []
        for a in range(n):
            lines.append(f"###{split}{a:04d}")
            for label in RCT_LABELS:
                words = f"{rng.choice(_PHRASES[label])} {rng.choice(_TOPICS)} in {rng.randint(10, 99)} patients ."
                lines.append(f"{label}\t{words}")
            lines.append("")
        atomic_write_text(root / f"{split}.txt", "\n".join(lines) + "\n")
    return root


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _image_2d(shape: str, rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
    r = rng.uniform(size * 0.18, size * 0.3)
    if shape == "disk":
        fg = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    elif shape == "square":
        fg = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
    else:
        fg = (np.floor(yy / 4) % 2 == 0) & (np.abs(xx - cx) < r * 1.5)
    img = 0.15 + 0.6 * fg + rng.normal(0, 0.05, (size, size))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_folders_2d(root: Path, per_class: int = 10, size: int = 32) -> Path:
    """``<class>/img_XX.png`` grey images of three shape classes."""
    rng = np.random.default_rng(21)
    for shape in SHAPES_2D:
        for i in range(per_class):
            atomic_write_bytes(root / shape / f"img_{i:02d}.png", _png(_image_2d(shape, rng, size)))
    return root


def _volume(shape: str, rng: np.random.Generator, size: tuple[int, int, int]) -> np.ndarray:
    """``(x, y, z)`` float32 volume (the stored NIfTI order)."""
    x, y, z = size
    xx, yy, zz = np.mgrid[:x, :y, :z].astype(np.float32)
    c = rng.uniform(0.4, 0.6, 3) * np.array(size)
    if shape == "sphere":
        fg = ((xx - c[0]) / (x * 0.25)) ** 2 + ((yy - c[1]) / (y * 0.25)) ** 2 + ((zz - c[2]) / (z * 0.3)) ** 2 < 1
    else:
        fg = (np.abs(zz - c[2]) < z * 0.2) & (np.abs(xx - c[0]) < x * 0.35)
    return (100.0 * fg + rng.normal(0, 10, size)).astype(np.float32)


def write_csv_3d(root: Path, per_class: int = 8, size: tuple[int, int, int] = (32, 32, 16)) -> Path:
    """``volumes/<case>.nii.gz`` and ``labels.csv`` with ``path,label`` rows."""
    import nibabel as nib

    rng = np.random.default_rng(22)
    rows = []
    for shape in SHAPES_3D:
        for i in range(per_class):
            rel = f"volumes/{shape}_{i:02d}.nii.gz"
            img = nib.Nifti1Image(_volume(shape, rng, size), affine=np.eye(4))
            atomic_write_bytes(root / rel, _gz(img))
            rows.append((rel, shape))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows(rows)
    atomic_write_text(root / "labels.csv", buf.getvalue())
    return root


def _gz(img: Any) -> bytes:
    import gzip

    return gzip.compress(img.to_bytes(), mtime=0)


def write_demo(root: Path, dims: int) -> Path:
    """Write (once) the demo set of ``dims`` under ``root`` and return the folder to read."""
    root = Path(root)
    if _done(root):
        return root
    root.mkdir(parents=True, exist_ok=True)
    if dims == 1:
        write_pubmed(root)
    elif dims == 2:
        write_folders_2d(root)
    else:
        write_csv_3d(root)
    atomic_write_text(root / MARKER, f"medkit classification demo, {dims}D\n")
    return root
