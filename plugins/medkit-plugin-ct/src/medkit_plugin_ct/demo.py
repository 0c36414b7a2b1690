"""Deterministic synthetic CT demo data: small NIfTI volumes in HU with a two-class label file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medkit.api import write_nifti_demo

#: (x, y, z) voxels and their spacing in mm: 72 mm along z -> 72 slices at 1 mm -> 8 windows each.
SHAPE = (64, 64, 48)
SPACING = (3.0, 3.0, 1.5)
CLASSES = ("spheres", "boxes")
N_VOLUMES = 6


def _volume(index: int) -> tuple[np.ndarray, str]:
    """One body-like phantom in HU: air, an elliptic soft-tissue trunk, a spine, and two bright
    lesions whose shape (spheres or boxes) is the class."""
    rng = np.random.default_rng(1000 + index)
    label = CLASSES[index % 2]
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    cx, cy = SHAPE[0] / 2 + rng.uniform(-2, 2), SHAPE[1] / 2 + rng.uniform(-2, 2)
    vol = np.full(SHAPE, -1000.0, dtype=np.float32)
    trunk = ((x - cx) / 26) ** 2 + ((y - cy) / 20) ** 2 <= 1.0
    vol[trunk] = 40.0
    lungs = [((x - cx - s * 11) / 8) ** 2 + ((y - cy + 3) / 10) ** 2 <= 1.0 for s in (-1, 1)]
    vol[lungs[0] | lungs[1]] = -850.0
    vol[((x - cx) / 4) ** 2 + ((y - cy - 13) / 4) ** 2 <= 1.0] = 700.0  # spine
    for _ in range(2):
        px, py = cx + rng.uniform(-14, 14), cy + rng.uniform(-10, 6)
        pz, r = rng.uniform(12, SHAPE[2] - 12), rng.uniform(4, 7)
        if label == "spheres":
            blob = ((x - px) ** 2 + (y - py) ** 2 + ((z - pz) * SPACING[2] / SPACING[0]) ** 2) <= r ** 2
        else:
            blob = (abs(x - px) <= r) & (abs(y - py) <= r) & (abs(z - pz) * SPACING[2] / SPACING[0] <= r)
        vol[blob & trunk] = rng.uniform(250.0, 400.0)
    vol += rng.normal(0.0, 15.0, SHAPE).astype(np.float32)
    return np.clip(np.rint(vol), -1024, 3071).astype(np.int16), label


def write_demo(root: Path) -> Path:
    """Write the demo volumes and ``labels.csv`` under ``root`` once; later calls only check them."""
    names = [f"phantom_{i:02d}.nii.gz" for i in range(N_VOLUMES)]
    return write_nifti_demo(root, names, _volume, SPACING, "CT")
