"""Procedural labelled 2D modalities for bench/continual.py: shapes, gratings and intensity fields.

Each modality renders ``num_samples`` 3 × 32 × 32 images from their index alone (no files but an
``index.json`` of ids), four classes per modality, two images per *source* (the same object seen
twice with new noise, as two views of one patient), so the engine's source-level split keeps both
views on one side. The three modalities differ in their statistics, so training the shared encoder
on one moves it away from what another needs:

* ``bench_shapes``: a bright disc / square / ring / cross at a random place and size on noise;
* ``bench_gratings``: a sinusoidal grating at 0° / 45° / 90° / 135°, random frequency and phase;
* ``bench_fields``: a smooth intensity field (left→right ramp, top→bottom ramp, centre blob,
  four corner blobs) with random contrast, plus speckle.

Registered through an in-process plugin host (:func:`use_bench_host`), the same way
``medkit.testing.contracts.use_synthetic_host`` adds its synthetic modalities.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import torch

from medkit.api.batch import TrainViewMixin
from medkit.api.hookspecs import hookimpl

MEDKIT_API_VERSION = 1
SIZE = 32
KINDS = {
    "bench_shapes": ["disc", "square", "ring", "cross"],
    "bench_gratings": ["0deg", "45deg", "90deg", "135deg"],
    "bench_fields": ["ramp_x", "ramp_y", "centre", "corners"],
}
VIEWS_PER_SOURCE = 2
NOISE = 0.08  # pixel noise of every modality (two views of a source differ by it)


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.linspace(-1.0, 1.0, SIZE)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return yy, xx


def render(kind: str, label: int, source: int, view: int) -> torch.Tensor:
    """The ``[3, 32, 32]`` image of class ``label`` of ``source``; ``view`` only changes the noise."""
    key = zlib.crc32(kind.encode()) % 100_003
    g = torch.Generator().manual_seed(source * 7919 + key)  # the object: shared by its views
    noise_g = torch.Generator().manual_seed(source * 7919 + key + (view + 1) * 15_485_863)
    yy, xx = _grid()
    u = torch.rand(8, generator=g)
    if kind == "bench_shapes":
        cy, cx = (u[0] - 0.5) * 0.8, (u[1] - 0.5) * 0.8
        r = 0.25 + 0.2 * u[2]
        dy, dx = yy - cy, xx - cx
        if label == 0:
            m = (dy ** 2 + dx ** 2) < r ** 2
        elif label == 1:
            m = (dy.abs() < r * 0.85) & (dx.abs() < r * 0.85)
        elif label == 2:
            d = (dy ** 2 + dx ** 2).sqrt()
            m = (d < r) & (d > r * 0.6)
        else:
            m = ((dy.abs() < r * 0.3) & (dx.abs() < r)) | ((dx.abs() < r * 0.3) & (dy.abs() < r))
        img = m.float() * (0.6 + 0.4 * u[3])
        colour = torch.stack([0.5 + 0.5 * u[4], 0.5 + 0.5 * u[5], 0.5 + 0.5 * u[6]])
        x = img[None] * colour[:, None, None]
        sigma = NOISE
    elif kind == "bench_gratings":
        theta = math.pi * label / 4
        freq = 3.0 + 4.0 * float(u[0])
        phase = 2 * math.pi * float(u[1])
        wave = torch.sin(freq * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
        x = (0.5 + 0.35 * wave)[None].expand(3, -1, -1) * (0.7 + 0.3 * u[2])
        sigma = NOISE
    else:
        contrast = 0.5 + 0.5 * float(u[0])
        if label == 0:
            f = (xx + 1) / 2
        elif label == 1:
            f = (yy + 1) / 2
        elif label == 2:
            f = torch.exp(-((yy - (u[1] - 0.5) * 0.4) ** 2 + (xx - (u[2] - 0.5) * 0.4) ** 2) / 0.15)
        else:
            f = sum(torch.exp(-((yy - sy * 0.75) ** 2 + (xx - sx * 0.75) ** 2) / 0.08)
                    for sy in (-1, 1) for sx in (-1, 1))
        if u[3] < 0.5 and label in (0, 1):
            f = 1 - f
        tint = torch.tensor([1.0, 0.8 + 0.2 * float(u[4]), 0.6 + 0.4 * float(u[5])])
        x = (contrast * f)[None].expand(3, -1, -1) * tint[:, None, None]
        sigma = NOISE
    return (x + sigma * torch.randn(3, SIZE, SIZE, generator=noise_g)).float()


class ProceduralDataset(TrainViewMixin):
    """The samples of one procedural modality; ``load(i, seed)`` flips horizontally when the train
    view's augmentation seed says so (a flip keeps every class)."""

    def __init__(self, root: Path, train: bool, kind: str, source_offset: int = 0) -> None:
        index = json.loads((Path(root) / "index.json").read_text())
        self.kind, self.train, self.root = kind, train, Path(root)
        self.source_offset = int(source_offset)
        self.ids = list(index["ids"])
        n_cls = len(KINDS[kind])
        self.sources = [f"{kind}/s{self.source_offset + i // VIEWS_PER_SOURCE:04d}" for i in range(len(self.ids))]
        self.labels = [(i // VIEWS_PER_SOURCE) % n_cls for i in range(len(self.ids))]
        self.class_names = list(KINDS[kind])
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        src, view = divmod(index, VIEWS_PER_SOURCE)
        x = render(self.kind, self.labels[index], self.source_offset + src, view)
        if (self.train and seed is not None and self.kind != "bench_fields"
                and torch.rand(1, generator=torch.Generator().manual_seed(seed)) < 0.5):
            x = x.flip(-1)
        return {"input": x, "id": self.ids[index], "label": self.labels[index]}


class ProceduralModality:
    """A 2D modality (``patch_2d``, MAE) whose demo data is an index of ``num_samples`` ids.

    ``source_offset`` renders other objects (sources ``offset..offset + n``) under other ids: data that
    shares no sample with the default set, for tuning settings on data no reported number uses."""

    default_objective = "mae"
    default_tokenizer = "patch_2d"
    dims = 2

    def __init__(self, name: str, num_samples: int = 480, source_offset: int = 0) -> None:
        self.name, self.num_samples, self.source_offset = name, int(num_samples), int(source_offset)

    def demo_data(self, root: Path) -> Path:
        from medkit.storage.files import atomic_write_text

        root = Path(root)
        index = root / "index.json"
        first = self.source_offset * VIEWS_PER_SOURCE
        text = json.dumps({"ids": [f"{self.name}/{first + i:04d}" for i in range(self.num_samples)]})
        if not index.exists() or index.read_text() != text:
            atomic_write_text(index, text)
        return root

    def dataset(self, data: Path, *, train: bool) -> ProceduralDataset:
        from medkit.api.errors import DataError

        if not (Path(data) / "index.json").exists():
            raise DataError(f"{data}: no index.json of procedural ids; let the bench write its demo data")
        return ProceduralDataset(Path(data), train, self.name, self.source_offset)


def make_shapes(num_samples: int = 480, source_offset: int = 0) -> ProceduralModality:
    return ProceduralModality("bench_shapes", num_samples, source_offset)


def make_gratings(num_samples: int = 480, source_offset: int = 0) -> ProceduralModality:
    return ProceduralModality("bench_gratings", num_samples, source_offset)


def make_fields(num_samples: int = 480, source_offset: int = 0) -> ProceduralModality:
    return ProceduralModality("bench_fields", num_samples, source_offset)


@hookimpl
def medkit_register_modalities(register: Any) -> None:
    from medkit.api.specs import ModalitySpec

    for name, factory in [("bench_shapes", "make_shapes"), ("bench_gratings", "make_gratings"),
                          ("bench_fields", "make_fields")]:
        register(ModalitySpec(name, f"continual_data:{factory}", summary="procedural benchmark data",
                              meta={"dims": 2, "default_tokenizer": "patch_2d", "default_objective": "mae"}))


def use_bench_host() -> Any:
    """A process-wide plugin host with every installed plugin plus these modalities."""
    import importlib.metadata as md
    import sys

    import medkit.config.compose as config
    from medkit.registry import reset_host
    from medkit.registry.host import PluginHost

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    eps = list(md.entry_points(group="medkit"))
    eps.append(md.EntryPoint(name="bench_continual", value="continual_data", group="medkit"))
    host = PluginHost(eps)
    reset_host(host)
    config._STORE = None
    return host
