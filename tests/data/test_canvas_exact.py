"""Prepared 2D canvases load bit for bit as the first torch implementation did, sample and batch, for fixed seeds."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medkit.data.canvas2d import canvas_sample
from medkit.data.image2d import normalize, random_resized_crop_params
from medkit.data.modality2d import Image2DOptions
from medkit.engine.loader import StepItem, StepSamples
from medkit.engine.plan import StepPlan

_U16 = 65535.0


# -- the implementation these must equal, frozen: scalar draws, torch slicing, one op per step ----
def _params_before(g: torch.Generator, size: int, scale: Any,
                   ratio: Any = (3 / 4, 4 / 3)) -> tuple[float, float, float, float]:
    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=g, dtype=torch.float64))

    area = float(size * size)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * uniform(float(scale[0]), float(scale[1]))
        aspect = math.exp(uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= size and 0 < h <= size:
            top = int(torch.randint(0, size - h + 1, (1,), generator=g))
            left = int(torch.randint(0, size - w + 1, (1,), generator=g))
            return top / size, left / size, h / size, w / size
    return 0.0, 0.0, 1.0, 1.0


def _resize_before(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)


def _canvas_before(modality: Any, arr: np.ndarray, seed: int | None) -> torch.Tensor:
    opts = modality.options
    size = int(opts.input_size)
    x = torch.from_numpy(arr.copy())
    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
    flip = False
    if seed is not None:
        gen = torch.Generator().manual_seed(int(seed))
        top, left, h, w = _params_before(gen, size, opts.crop_scale)
        flip = float(torch.rand((), generator=gen, dtype=torch.float64)) < 0.5 and opts.hflip
        t, lft = int(round(top * size)), int(round(left * size))
        x = x[:, t:t + int(round(h * size)), lft:lft + int(round(w * size))]
    if x.dtype == torch.uint8:
        y = _resize_before(x.unsqueeze(0).contiguous(memory_format=torch.channels_last if x.shape[0] == 3
                                                     else torch.contiguous_format), size)[0]
        y = y.to(torch.float32).mul_(1.0 / 255.0)
    else:
        y = x.to(torch.float32)
        if arr.dtype == np.uint16:
            y = y.mul_(1.0 / _U16)
        y = _resize_before(y.unsqueeze(0), size)[0].clamp_(0.0, 1.0)
    if flip:
        y = y.flip(-1)
    if y.shape[0] != modality.channels:
        y = y.expand(modality.channels, -1, -1)
    return normalize(y, opts.normalize)


def _canvases(size: int) -> dict[str, np.ndarray]:
    """Noise with the extremes (the bicubic overshoot is clamped) in every stored dtype."""
    rng = np.random.default_rng(size)
    grey = rng.random((size, size), dtype=np.float32)
    grey[::7] = 0.0
    grey[:, ::5] = 1.0
    return {"uint16": np.rint(grey * _U16).astype(np.uint16), "float32": grey,
            "uint8": rng.integers(0, 256, (size, size), dtype=np.uint8),
            "rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)}


def test_crop_draws_are_the_scalar_draws_they_replaced():
    """Both uniforms of an attempt come from one call: the same values, the same generator state
    after (the flip's draw that follows), also where every attempt fails (the fallback)."""
    for size, scale in ((224, (0.2, 1.0)), (32, (0.08, 1.0)), (224, (0.9, 1.0)), (16, (3.0, 4.0))):
        for seed in range(400):
            new, old = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            assert random_resized_crop_params(new, size, scale) == _params_before(old, size, scale), (size, seed)
            assert torch.equal(torch.rand(3, generator=new, dtype=torch.float64),
                               torch.rand(3, generator=old, dtype=torch.float64))


@pytest.mark.parametrize("size", [224, 32])
@pytest.mark.parametrize("kind", ["uint16", "float32", "uint8", "rgb"])
def test_canvas_samples_are_bit_identical_to_the_first_implementation(size, kind):
    arr = _canvases(size)[kind]
    configs = [(3, Image2DOptions(input_size=size)), (1, Image2DOptions(input_size=size, hflip=False)),
               (3, Image2DOptions(input_size=size, crop_scale=(0.5, 1.0), normalize="imagenet"))]
    for channels, opts in configs:
        channels = 3 if kind == "rgb" else channels  # RGB is never made grey
        mod = SimpleNamespace(name="xray", channels=channels, options=opts)
        for seed in [None, *range(0, 6000, 97)]:
            stored = arr.copy()
            got = canvas_sample(mod, stored, "s", None, seed)["input"]
            want = _canvas_before(mod, arr, seed)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert torch.equal(got, want), (kind, size, channels, seed)
            assert np.array_equal(stored, arr), "the stored item is read, never written"


def test_prepared_batches_are_bit_identical_to_the_first_implementation(tmp_path: Path):
    """A prepared X-ray folder's batches under the step plan, collated as the engine does, equal
    those the first implementation makes from the same stored canvases with the same seeds."""
    pytest.importorskip("litdata")
    from medkit.api.batch import Source
    from medkit.data.prepare import prepare
    from medkit.data.prepared_dataset import open_prepared
    from medkit.registry import create

    mod = create("modality", "xray", input_size=32)
    demo = Path(mod.demo_data(tmp_path / "demo"))
    prepare(mod, demo, tmp_path / "p", part_size=64)
    ds = open_prepared(mod, tmp_path / "p", train=True)
    stored = [np.asarray(ds.reader.read(i)["x"]).copy() for i in range(len(ds))]
    steps = StepSamples({"xray": ds}, {"xray": create("tokenizer", "patch_2d", embed_dim=32, base_size=(32, 32))})
    plan = StepPlan([Source("xray", list(range(len(ds))))], batch_size=8, max_steps=6, seed=7, stage=0)
    for s in range(len(plan)):
        _, indices, seeds = plan.step(s)
        got = steps[StepItem(step=s, modality="xray", role="current", indices=tuple(indices), seeds=tuple(seeds))][0]
        want = torch.stack([_canvas_before(mod, stored[i], k) for i, k in zip(indices, seeds)])
        assert torch.equal(got.inputs, want), f"step {s}"
