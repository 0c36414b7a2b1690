"""The ``pathology`` modality: options, demo data and dataset construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from medkit.api.errors import ConfigError
from medkit.data.image2d import NORMALIZE_MODES
from medkit_plugin_pathology.dataset import PathologyDataset, PathologyOptions, build_dataset

ON_ERROR = ("raise", "skip")


def _pair(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"modality pathology: {name} must be two numbers, got {value!r}; "
                          f"e.g. modality.pathology.{name}=[{low},{high}]") from exc
    if not low <= a < b <= high:
        raise ConfigError(f"modality pathology: {name} must satisfy {low} <= low < high <= {high}, got {value!r}")
    return a, b


def _choice(value: str, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"modality pathology: {name} must be one of {', '.join(allowed)}, got {value!r}; "
                          f"set modality.pathology.{name}=<one of them>")
    return value


def _number(value: Any, name: str, low: float, high: float | None = None) -> float:
    v = float(value)
    if v < low or (high is not None and v > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"modality pathology: {name} must be {bound}, got {value!r}")
    return v


class PathologyModality:
    """RGB histology: PNG/JPEG/TIFF tiles or larger images cut into tiles, values in [0, 1].

    Args:
        input_size: output edge; every tile is resized to ``input_size``².
        tile_size: images larger than this (either side) are cut into ``tile_size``² tiles.
        max_tiles_per_patient: seeded random cap per patient (MedCoSS: 100); 0 keeps all.
        tile_seed: seed of that choice (MedCoSS: 0).
        min_tissue: tiles whose tissue fraction is below this are dropped as background (0: off).
        tissue_saturation: a pixel is tissue when its HSV saturation exceeds this.
        patient_level: without ``patients.csv``, the folder level naming the patient (0 = first).
        folder_labels: without ``labels.csv``, the first folder level is the class.
        normalize: ``none`` ([0, 1], the MedCoSS convention), ``imagenet`` or ``zscore`` (per image).
        crop_scale: area range of the training RandomResizedCrop.
        hflip: random horizontal flip in training.
        tile_mpp: whole-slide images (SVS, NDPI, MRXS, pyramidal TIFF, DICOM-WSI): µm per pixel of a
            ``tile_size`` tile (0.5: 256 µm tiles at 20×); tiles are read at the best pyramid level.
        slide_mpp: µm per level-0 pixel of every slide, for slides whose header does not say it.
        on_error: ``raise`` (stop at the first bad file) or ``skip`` (log it, record it in
            ``dataset.skipped``).
    """

    name = "pathology"
    dims = 2
    default_tokenizer = "patch_2d"
    default_objective = "mae"

    def __init__(self, input_size: int = 224, tile_size: int = 512, max_tiles_per_patient: int = 100,
                 tile_seed: int = 0, min_tissue: float = 0.25, tissue_saturation: float = 0.07,
                 patient_level: int = 0, folder_labels: bool = True, normalize: str = "none",
                 crop_scale: tuple[float, float] = (0.2, 1.0), hflip: bool = True,
                 on_error: str = "raise", tile_mpp: float = 0.5, slide_mpp: float | None = None) -> None:
        for name, value in (("input_size", input_size), ("tile_size", tile_size)):
            if int(value) < 1:
                raise ConfigError(f"modality pathology: {name} must be a positive int, got {value!r}")
        self.options = PathologyOptions(
            input_size=int(input_size), tile_size=int(tile_size),
            max_tiles_per_patient=int(_number(max_tiles_per_patient, "max_tiles_per_patient", 0)),
            tile_seed=int(tile_seed), min_tissue=_number(min_tissue, "min_tissue", 0.0, 1.0),
            tissue_saturation=_number(tissue_saturation, "tissue_saturation", 0.0, 1.0),
            patient_level=int(_number(patient_level, "patient_level", 0)),
            folder_labels=bool(folder_labels), normalize=_choice(normalize, "normalize", NORMALIZE_MODES),
            crop_scale=_pair(crop_scale, "crop_scale", 0.0, 1.0), hflip=bool(hflip),
            on_error=_choice(on_error, "on_error", ON_ERROR), tile_mpp=_number(tile_mpp, "tile_mpp", 1e-3),
            slide_mpp=None if slide_mpp is None else _number(slide_mpp, "slide_mpp", 1e-3))

    def demo_data(self, root: Path) -> Path:
        """Write synthetic H&E-like slides and tiles in two class folders under ``root``."""
        from medkit_plugin_pathology.demo import write_demo

        return write_demo(Path(root))

    def dataset(self, data: Path, *, train: bool) -> PathologyDataset:
        """Index the images under ``data`` into tissue tiles; ``train`` enables the seeded augmentation."""
        return build_dataset(Path(data), self.options, train=train)
