"""Deterministic synthetic T1-like MRI demo data: small NIfTI head phantoms with a two-class label."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medkit.api import write_nifti_demo

#: (x, y, z) voxels and spacing in mm: 60 slices, 6 dropped at each end -> 48 -> 5 windows each.
SHAPE = (64, 64, 60)
SPACING = (3.0, 3.5, 3.0)
CLASSES = ("normal", "atrophy")
N_VOLUMES = 6


def _volume(index: int) -> tuple[np.ndarray, str]:
    """A T1-weighted-looking head: bright scalp, dark skull and CSF, grey-matter shell, bright white
    matter, two lateral ventricles. ``atrophy`` has large ventricles and a thin cortex."""
    rng = np.random.default_rng(2000 + index)
    label = CLASSES[index % 2]
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    centre = [n / 2 + rng.uniform(-1.5, 1.5) for n in SHAPE]
    x, y, z = (g - c for g, c in zip(grid, centre))

    def ellipsoid(rx: float, ry: float, rz: float, dx: float = 0.0) -> np.ndarray:
        return ((x - dx) / rx) ** 2 + (y / ry) ** 2 + (z / rz) ** 2

    head = ellipsoid(26, 29, 26)
    vol = np.zeros(SHAPE, dtype=np.float32)
    vol[head <= 1.0] = 380.0  # scalp
    vol[head <= 0.88] = 60.0  # skull
    brain_scale = 0.78 if label == "normal" else 0.70
    vol[head <= 0.8] = 150.0  # CSF between skull and brain
    vol[head <= brain_scale] = 480.0  # grey matter
    vol[head <= brain_scale - (0.18 if label == "normal" else 0.08)] = 760.0  # white matter
    big = label == "atrophy"
    for side in (-1, 1):  # lateral ventricles
        r = (6.0, 11.0, 8.0) if big else (3.0, 7.0, 4.5)
        vol[ellipsoid(*r, dx=side * (r[0] + 1.0)) <= 1.0] = 140.0
    bias = 1.0 + 0.15 * (grid[0] / SHAPE[0] - 0.5) * rng.choice([-1, 1]) + 0.1 * (grid[2] / SHAPE[2] - 0.5)
    vol *= bias.astype(np.float32)
    noise = rng.normal(0.0, 18.0, (2, *SHAPE)).astype(np.float32)
    vol = np.sqrt((vol + noise[0]) ** 2 + noise[1] ** 2)  # Rician magnitude noise
    return np.clip(np.rint(vol), 0, 32767).astype(np.int16), label


def write_demo(root: Path) -> Path:
    """Write the demo volumes and ``labels.csv`` under ``root`` once; later calls only check them."""
    names = [f"head_{i:02d}.nii.gz" for i in range(N_VOLUMES)]
    return write_nifti_demo(root, names, _volume, SPACING, "MRI")
