"""Synthetic modalities (samples generated from their index) and a driver of the real engine over
them: strategy and host tests in seconds. Also an installable plugin module (entry point
``synthetic = medkit.testing.synthetic``) for subprocess tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medkit.api.views import TrainViewMixin  # torch-free: the plugin imports in milliseconds
from medkit.api.hookspecs import hookimpl as _hookimpl

MEDKIT_API_VERSION = "1.1"




class SyntheticDataset(TrainViewMixin):
    """Samples generated from their index: a noisy volume (or image) with a bright quadrant whose
    position is the label. ``load(i, seed)`` flips along the last axis when the seed says so."""

    def __init__(self, root: Path, train: bool, size: tuple[int, ...], offset: float) -> None:
        import json

        index = json.loads((Path(root) / "index.json").read_text())
        self.ids = list(index["ids"])
        self.labels = [i % 2 for i in range(len(self.ids))]
        self.class_names = ["upper", "lower"]
        self.skipped: list[tuple[str, str]] = []
        self.train, self.size, self.offset = train, tuple(size), offset

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        import torch

        g = torch.Generator().manual_seed(1000 + index)
        channels = 3 if len(self.size) == 2 else 1
        x = torch.randn(channels, *self.size, generator=g) * 0.1 + self.offset
        half = self.size[-2] // 2
        if self.labels[index]:
            x[..., half:, :] += 1.0
        else:
            x[..., :half, :] += 1.0
        if self.train and seed is not None and torch.rand(1, generator=torch.Generator().manual_seed(seed)) < 0.5:
            x = x.flip(-1)
        return {"input": x, "id": self.ids[index], "label": self.labels[index]}


class SyntheticModality:
    """A modality whose demo data is an index of ids (samples are generated): engine tests in
    seconds. ``synth_a``/``synth_b`` are 3D (``patch_3d``), ``synth_2d`` is 2D (``patch_2d``)."""

    default_objective = "mae"

    def __init__(self, name: str = "synth_a", num_samples: int = 24,
                 size: tuple[int, ...] = (16, 32, 32), offset: float = 0.0) -> None:
        self.name, self.num_samples, self.size, self.offset = name, num_samples, tuple(size), offset
        self.dims = len(self.size)
        self.default_tokenizer = "patch_3d" if self.dims == 3 else "patch_2d"

    def demo_data(self, root: Path) -> Path:
        import json

        from medkit.storage.files import atomic_write_text

        root = Path(root)
        index = root / "index.json"
        text = json.dumps({"ids": [f"{self.name}/{i:03d}" for i in range(self.num_samples)]})
        if not index.exists() or index.read_text() != text:  # idempotent; atomic for concurrent ranks
            atomic_write_text(index, text)
        return root

    def dataset(self, data: Path, *, train: bool) -> SyntheticDataset:
        from medkit.api.errors import DataError

        if not (Path(data) / "index.json").exists():
            raise DataError(f"{data}: empty folder (no index.json of synthetic ids)")
        return SyntheticDataset(Path(data), train, self.size, self.offset)


def make_synth_a(num_samples: int = 24, size: tuple[int, int, int] = (16, 32, 32)) -> SyntheticModality:
    return SyntheticModality("synth_a", num_samples, size, 0.0)


def make_synth_b(num_samples: int = 24, size: tuple[int, int, int] = (16, 32, 32)) -> SyntheticModality:
    return SyntheticModality("synth_b", num_samples, size, 0.5)


def make_synth_2d(num_samples: int = 24, size: tuple[int, int] = (32, 32)) -> SyntheticModality:
    return SyntheticModality("synth_2d", num_samples, size, 0.0)


def medkit_register_modalities(register: Any) -> None:
    from medkit.api.specs import ModalitySpec

    for name, factory, dims in [("synth_a", "make_synth_a", 3), ("synth_b", "make_synth_b", 3),
                                ("synth_2d", "make_synth_2d", 2)]:
        register(ModalitySpec(name, f"medkit.testing.synthetic:{factory}", summary="synthetic test data",
                              meta={"dims": dims, "default_tokenizer": "patch_3d" if dims == 3 else "patch_2d",
                                    "default_objective": "mae"}))



medkit_register_modalities = _hookimpl(medkit_register_modalities)


def use_synthetic_host() -> Any:
    """Install a process-wide plugin host with every installed plugin plus the synthetic modalities."""
    import importlib.metadata as md

    from medkit.registry import reset_host
    from medkit.registry.host import PluginHost

    eps = [ep for ep in md.entry_points(group="medkit")]
    eps.append(md.EntryPoint(name="synthetic", value="medkit.testing.synthetic", group="medkit"))
    host = PluginHost(eps)
    reset_host(host)
    return host


def run_synthetic(run_dir: Path, strategy: str, modalities: tuple[str, ...] = ("synth_a", "synth_b"),
                  *, max_steps: int = 6, overrides: tuple[str, ...] = (), seed: int = 0,
                  demo_dir: Path | None = None) -> Path:
    """Run the real engine at a very small size over synthetic modalities; returns the run dir."""
    import os

    from medkit.config.compose import Selection, compose
    from medkit.engine.engine import Engine
    from medkit.api.progress import NullReporter

    previous = os.environ.get("MEDKIT_DEMO_DIR")
    if demo_dir is not None:
        os.environ["MEDKIT_DEMO_DIR"] = str(demo_dir)
    try:
        host = use_synthetic_host()
        base = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.batch_size=4",
                "trainer.eval_batches=1", "trainer.checkpoint_every=1000", "trainer.probe_refit_steps=0"]
        cfg = compose(Selection(modalities=list(modalities), strategy=strategy, preset="tiny",
                                max_steps=max_steps, seed=seed, overrides=base + list(overrides)), host=host)
        Engine(cfg, Path(run_dir), components=host, reporter=NullReporter()).run()
    finally:
        if previous is None:
            os.environ.pop("MEDKIT_DEMO_DIR", None)
        else:
            os.environ["MEDKIT_DEMO_DIR"] = previous
    return Path(run_dir)


