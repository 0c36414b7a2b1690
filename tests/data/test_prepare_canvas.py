"""Prepared 2D data on the ``view`` canvas: the un-augmented view stored at input_size², cropped and flipped at load."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("litdata")

from medkit.api.errors import ConfigError
from medkit.data.canvas2d import canvas_sample
from medkit.data.image2d import crop_box, random_resized_crop_params, to_tensor
from medkit.data.modality2d import Image2DOptions
from medkit.data.prepare import prepare
from medkit.data.prepared import read_manifest
from medkit.data.prepared_dataset import open_prepared
from medkit.registry import create

SIZE = 32


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("prep-canvas")
    mod = create("modality", "xray", input_size=SIZE)
    demo = Path(mod.demo_data(root / "demo"))
    prepare(mod, demo, root / "p", part_size=64)
    return {"mod": mod, "demo": demo, "out": root / "p"}


def _reference_view(canvas: Image.Image, seed: int, crop_scale: tuple[float, float]) -> torch.Tensor:
    """torchvision's RandomResizedCrop on a PIL image (crop, then a bicubic resize) + flip, with
    make_view's draws from ``seed``: the reference's augmentation of its stored 224² image."""
    size = canvas.width
    gen = torch.Generator().manual_seed(seed)
    box = crop_box((0.0, 0.0, float(size), float(size)), random_resized_crop_params(gen, size, crop_scale))
    flip = float(torch.rand((), generator=gen, dtype=torch.float64)) < 0.5
    view = canvas.crop(tuple(int(round(v)) for v in box)).resize((size, size), Image.Resampling.BICUBIC)
    return to_tensor(view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else view)


def test_the_view_canvas_is_the_unaugmented_view_and_crops_as_the_reference(prepared):
    """Stored: the folder path's un-augmented input_size² view as uint16 (within its rounding);
    loaded with a seed: the reference's crop-then-resize of that canvas with make_view's draws."""
    from litdata import StreamingDataset

    mod, out = prepared["mod"], prepared["out"]
    manifest = read_manifest(out)
    assert manifest["storage"]["canvas"] == "view" and manifest["preprocessing"]["input_size"] == SIZE
    item = StreamingDataset(str(out / manifest["parts"][0]["dir"]))[0]
    assert set(item) == {"x"} and item["x"].dtype == np.uint16 and item["x"].shape == (SIZE, SIZE)
    folder, prep = mod.dataset(prepared["demo"], train=True), open_prepared(mod, out, train=True)
    assert prep.ids == folder.ids
    for i in (0, 7):
        plain = prep.load(i, seed=None)["input"]
        assert plain.shape == (3, SIZE, SIZE) and plain.dtype == torch.float32
        assert float((plain - folder.load(i, seed=None)["input"]).abs().max()) < 1e-4
    canvas = Image.fromarray(item["x"].astype(np.float32) / 65535.0, mode="F")
    views = []
    for seed in (3, 11, 12345):
        got = prep.load(0, seed=seed)["input"]
        assert torch.equal(got, prep.load(0, seed=seed)["input"]), "a pure function of the seed"
        want = _reference_view(canvas, seed, mod.options.crop_scale)
        assert float((got[0] - want[0]).abs().max()) < 1e-4, f"seed {seed}"
        views.append(got)
    assert not torch.equal(views[0], views[1]), "augmentation happens at load time"


def test_uint8_rgb_canvases_crop_within_two_levels_of_pillow():
    """8-bit canvases are resized in integers by torch: on white noise (the worst case for the
    rounding between the two passes) within two levels of Pillow's mode RGB, almost all equal."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mod = SimpleNamespace(name="pathology", channels=3, options=Image2DOptions(input_size=SIZE))
    for seed in (1, 2, 99):
        got = canvas_sample(mod, arr.copy(), "s", 4, seed)
        want = _reference_view(Image.fromarray(arr), seed, mod.options.crop_scale)
        assert got["label"] == 4 and got["input"].shape == (3, SIZE, SIZE)
        diff = (got["input"] - want).abs()
        assert float(diff.max()) <= 2.0 / 255 + 1e-6 and float((diff > 1e-6).float().mean()) < 0.05


def test_a_run_of_another_input_size_is_refused_naming_the_key(prepared, tmp_path):
    """The stored size is part of the preprocessing config (and its hash): another input_size stops
    the run in one line naming modality.xray.input_size; load-time options still may differ."""
    with pytest.raises(ConfigError) as err:
        open_prepared(create("modality", "xray", input_size=48), prepared["out"], train=True)
    msg = str(err.value)
    assert "\n" not in msg and f"modality.xray.input_size={SIZE}" in msg and "48" in msg
    open_prepared(create("modality", "xray", input_size=SIZE, crop_scale=[0.5, 1.0]), prepared["out"], train=True)
    shutil.copytree(prepared["out"], tmp_path / "p")
    other = prepare(create("modality", "xray", input_size=48), prepared["demo"], tmp_path / "p", part_size=64)
    assert other.written == 1 and other.reused == 0, "another stored size writes the parts again"
