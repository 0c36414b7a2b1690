"""The ``xray`` modality: options, demo data and dataset construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from medkit.api.errors import ConfigError
from medkit.data.image2d import NORMALIZE_MODES
from medkit_plugin_xray.dataset import XrayDataset, XrayOptions, build_dataset
from medkit_plugin_xray.readers import INTENSITY_MODES

ON_ERROR = ("raise", "skip")


def _pair(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"modality xray: {name} must be two numbers, got {value!r}; "
                          f"e.g. modality.xray.{name}=[{low},{high}]") from exc
    if not low <= a < b <= high:
        raise ConfigError(f"modality xray: {name} must satisfy {low} <= low < high <= {high}, got {value!r}")
    return a, b


def _choice(value: str, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"modality xray: {name} must be one of {', '.join(allowed)}, got {value!r}; "
                          f"set modality.xray.{name}=<one of them>")
    return value


class XrayModality:
    """2D radiographs: PNG/JPEG/TIFF and DICOM, grey replicated to 3 channels, values in [0, 1].

    Args:
        input_size: output edge; every image is resized to ``input_size``² (aspect ratio not kept,
            as the reference).
        frontal_only: drop images whose view (``metadata.csv`` or DICOM ``ViewPosition``) is not
            PA/AP; images of unknown view are kept. The MedCoSS reference used every image.
        normalize: ``none`` ([0, 1], the MedCoSS convention), ``imagenet`` or ``zscore`` (per image).
        intensity: how raw values reach [0, 1]: ``auto``, ``percentile``, ``minmax`` or ``dtype``
            (see the README).
        percentiles: clip range for ``percentile`` (and ``auto`` without a DICOM window).
        crop_scale: area range of the training RandomResizedCrop.
        hflip: random horizontal flip in training.
        folder_labels: without ``labels.csv``, take the class from the first folder level.
        verify: decode every file while indexing (catches truncated files; slower).
        on_error: ``raise`` (stop at the first bad file) or ``skip`` (log it, record it in
            ``dataset.skipped``).
    """

    name = "xray"
    dims = 2
    default_tokenizer = "patch_2d"
    default_objective = "mae"

    def __init__(self, input_size: int = 224, frontal_only: bool = True, normalize: str = "none",
                 intensity: str = "auto", percentiles: tuple[float, float] = (0.5, 99.5),
                 crop_scale: tuple[float, float] = (0.2, 1.0), hflip: bool = True,
                 folder_labels: bool = False, verify: bool = False, on_error: str = "raise") -> None:
        if int(input_size) < 1:
            raise ConfigError(f"modality xray: input_size must be a positive int, got {input_size!r}")
        self.options = XrayOptions(
            input_size=int(input_size), frontal_only=bool(frontal_only),
            normalize=_choice(normalize, "normalize", NORMALIZE_MODES),
            intensity=_choice(intensity, "intensity", INTENSITY_MODES),
            percentiles=_pair(percentiles, "percentiles", 0.0, 100.0),
            crop_scale=_pair(crop_scale, "crop_scale", 0.0, 1.0), hflip=bool(hflip),
            folder_labels=bool(folder_labels), verify=bool(verify),
            on_error=_choice(on_error, "on_error", ON_ERROR))

    def demo_data(self, root: Path) -> Path:
        """Write ~40 synthetic chest PNGs, 3 DICOMs (one lateral) and ``labels.csv`` under ``root``."""
        from medkit_plugin_xray.demo import write_demo

        return write_demo(Path(root))

    def dataset(self, data: Path, *, train: bool) -> XrayDataset:
        """Index the X-rays under ``data``; ``train`` enables the seeded augmentation."""
        return build_dataset(Path(data), self.options, train=train)
