"""Deterministic demo data made with MONAI's ``create_test_image_2d/3d``: PNG image/mask pairs (2D)
and an MSD-layout NIfTI set with ``dataset.json`` (3D)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np

from medkit.api import atomic_write_bytes, atomic_write_text

MARKER = ".medkit-demo-complete"
DEMO_LABELS_3D = {"0": "background", "1": "organ", "2": "lesion"}


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_pairs_2d(root: Path, cases: int = 20, size: int = 32) -> Path:
    """``images/case_XX.png`` (grey, uint8) and ``masks/case_XX.png`` (0/255)."""
    from monai.data import create_test_image_2d

    for i in range(cases):
        img, seg = create_test_image_2d(size, size, num_objs=3, rad_max=7, rad_min=3, noise_max=0.3,
                                        num_seg_classes=1, random_state=np.random.RandomState(100 + i))
        image = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        mask = ((seg > 0) * 255).astype(np.uint8)
        atomic_write_bytes(root / "images" / f"case_{i:02d}.png", _png(image))
        atomic_write_bytes(root / "masks" / f"case_{i:02d}.png", _png(mask))
    return root


def _nifti(arr: np.ndarray) -> bytes:
    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(arr, affine=np.eye(4)).to_bytes(), mtime=0)


def write_msd_3d(root: Path, cases: int = 12, size: tuple[int, int, int] = (32, 32, 16)) -> Path:
    """``imagesTr/case_XX.nii.gz`` (float32, stored (x, y, z)), ``labelsTr/case_XX.nii.gz``
    (uint8, 0 background, 1 organ, 2 lesion) and ``dataset.json`` (MSD)."""
    from monai.data import create_test_image_3d

    training = []
    for i in range(cases):
        img, seg = create_test_image_3d(size[0], size[1], size[2], num_objs=3, rad_max=6, rad_min=3,
                                        noise_max=0.3, num_seg_classes=2, random_state=np.random.RandomState(200 + i))
        name = f"case_{i:02d}.nii.gz"
        atomic_write_bytes(root / "imagesTr" / name, _nifti(img.astype(np.float32)))
        atomic_write_bytes(root / "labelsTr" / name, _nifti(seg.astype(np.uint8)))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "medkit-demo-3d", "description": "MONAI create_test_image_3d blobs",
            "tensorImageSize": "3D", "modality": {"0": "CT"}, "labels": DEMO_LABELS_3D,
            "numTraining": cases, "numTest": 0, "training": training, "test": []}
    atomic_write_text(root / "dataset.json", json.dumps(meta, indent=2) + "\n")
    return root


def write_demo(root: Path, dims: int) -> Path:
    """Write (once) the demo set of ``dims`` under ``root`` and return the folder to read."""
    root = Path(root)
    if (root / MARKER).exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    if dims == 2:
        write_pairs_2d(root)
    else:
        write_msd_3d(root)
    atomic_write_text(root / MARKER, f"medkit segmentation demo, {dims}D\n")
    return root
