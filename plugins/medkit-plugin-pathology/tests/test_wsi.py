"""Whole-slide images: header index, µm/px, tissue on a coarse level, seeded caps, tile reads, CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medkit.api import DataError
from medkit.testing import create
from medkit_plugin_pathology import wsi
from medkit_plugin_pathology.tiling import tissue_mask

openslide = pytest.importorskip("openslide")
tifffile = pytest.importorskip("tifffile")

FIXTURES = Path(__file__).parent / "fixtures" / "wsi"
WHITE, PINK = (246, 244, 247), (234, 168, 204)


def pyramid_tiff(path: Path, size: int = 2048, mpp: float | None = 0.25, *, tissue=None, levels: int = 3) -> Path:
    """A tiled pyramidal RGB TIFF (OpenSlide's generic-tiff) with pink tissue where ``tissue(img)``
    paints it (default: the left half and the top of the third quarter), ``mpp`` µm/px (None: no
    resolution tags)."""
    img = np.empty((size, size, 3), np.uint8)
    img[...] = WHITE
    if tissue is None:
        img[:, : size // 2] = PINK
        img[: size // 2, size // 2: 3 * size // 4] = PINK
    else:
        tissue(img)
    with tifffile.TiffWriter(path) as tw:
        for k in range(levels):
            level = np.ascontiguousarray(img[:: 2 ** k, :: 2 ** k])
            kw = {} if mpp is None else {"resolution": (1e4 / (mpp * 2 ** k),) * 2, "resolutionunit": "CENTIMETER"}
            tw.write(level, tile=(256, 256), photometric="rgb", compression="zlib",
                     subfiletype=0 if k == 0 else 1, **kw)
    return path


@pytest.fixture()
def slides(tmp_path: Path) -> Path:
    root = tmp_path / "slides"
    root.mkdir()
    pyramid_tiff(root / "a.tiff")
    pyramid_tiff(root / "b.tiff", tissue=lambda img: img.__setitem__((slice(None), slice(None)), PINK))
    return root


def test_header_index_levels_and_mpp_from_each_source(tmp_path: Path) -> None:
    svs = wsi.slide_info(FIXTURES / "small.svs")
    assert (svs.vendor, svs.dimensions, svs.mpp, svs.mpp_source) == ("aperio", ((16, 16),), 0.499, "openslide.mpp-x")
    boxes = wsi.slide_info(FIXTURES / "boxes.tiff")  # 28.35 px/cm in the TIFF tags
    assert boxes.vendor == "generic-tiff" and len(boxes.dimensions) == 4
    assert boxes.mpp == pytest.approx(1e4 / 28.346456527709961, rel=1e-6)
    assert wsi._tiff_mpp({"tiff.ResolutionUnit": "inch", "tiff.XResolution": "25400"}) == pytest.approx(1.0)
    assert wsi._tiff_mpp({"tiff.ResolutionUnit": "none", "tiff.XResolution": "72"}) is None
    dcm = wsi.slide_info(FIXTURES / "boxes_0.dcm")
    assert dcm.vendor == "dicom" and dcm.mpp == 0.499
    mine = wsi.slide_info(pyramid_tiff(tmp_path / "p.tiff", mpp=0.25))
    assert mine.dimensions == ((2048, 2048), (1024, 1024), (512, 512)) and mine.mpp == pytest.approx(0.25)


def test_unknown_resolution_is_a_clear_error_unless_overridden(tmp_path: Path) -> None:
    path = pyramid_tiff(tmp_path / "nores.tiff", mpp=None)
    with pytest.raises(DataError, match=r"nores\.tiff: .*resolution.*unknown.*slide_mpp"):
        wsi.slide_tiles(path, "nores.tiff")
    refs, grid = wsi.slide_tiles(path, "nores.tiff", slide_mpp=0.25)
    assert grid == 4 and len(refs) == 3


def test_tiles_at_the_requested_resolution_read_from_the_best_level(tmp_path: Path) -> None:
    path = pyramid_tiff(tmp_path / "p.tiff", mpp=0.25)
    refs, grid = wsi.slide_tiles(path, "p.tiff")  # default: 512 px at 0.5 µm/px = 1024 level-0 px
    assert grid == 4
    # bottom-right quadrant is white, the top-right one half tissue (≥ 25 %): 3 tiles kept
    assert [r.id for r in refs] == ["p.tiff#x0_y0", "p.tiff#x1024_y0", "p.tiff#x0_y1024"]
    assert all(r.level == 1 and r.read_size == (512, 512) for r in refs)
    assert refs[1].tissue == pytest.approx(0.5, abs=0.05)
    # at 0.25 µm/px the tiles come from level 0; at 1 µm/px from level 2
    fine, _ = wsi.slide_tiles(path, "p.tiff", tile_mpp=0.25)
    coarse, _ = wsi.slide_tiles(path, "p.tiff", tile_mpp=1.0, tile_size=256)
    assert {r.level for r in fine} == {0} and fine[0].read_size == (512, 512)
    assert {r.level for r in coarse} == {2} and coarse[0].read_size == (256, 256)


def test_tissue_criterion_is_the_tile_filters(tmp_path: Path) -> None:
    """A tile is kept when more than 7 % saturation covers ≥ 25 % of it, as for pre-cut tiles."""
    def paint(img: np.ndarray) -> None:
        img[:1024, :int(1024 * 0.30)] = PINK  # top-left tile: 30 % tissue
        img[:1024, 1024:1024 + int(1024 * 0.20)] = PINK  # top-right: 20 %
        img[1024:, :] = (200, 195, 192)  # bottom: grey, saturation 0.04 < 0.07: background
    path = pyramid_tiff(tmp_path / "t.tiff", tissue=paint)
    assert tissue_mask(np.array([[PINK, (200, 195, 192)]], np.uint8), 0.07).tolist() == [[True, False]]
    refs, _ = wsi.slide_tiles(path, "t.tiff")
    assert [r.id for r in refs] == ["t.tiff#x0_y0"]
    assert refs[0].tissue == pytest.approx(0.30, abs=0.04)


def test_at_most_n_tiles_per_slide_seeded(tmp_path: Path) -> None:
    path = pyramid_tiff(tmp_path / "s.tiff", tissue=lambda img: img.__setitem__((slice(None), slice(None)), PINK))
    every, grid = wsi.slide_tiles(path, "s.tiff", tile_size=128, tile_mpp=0.5)
    assert grid == len(every) == 64
    a, _ = wsi.slide_tiles(path, "s.tiff", tile_size=128, tile_mpp=0.5, max_tiles=5, seed=0)
    b, _ = wsi.slide_tiles(path, "s.tiff", tile_size=128, tile_mpp=0.5, max_tiles=5, seed=0)
    c, _ = wsi.slide_tiles(path, "s.tiff", tile_size=128, tile_mpp=0.5, max_tiles=5, seed=1)
    assert [r.id for r in a] == [r.id for r in b] and len(a) == 5
    assert {r.id for r in a} <= {r.id for r in every} and {r.id for r in a} != {r.id for r in c}


def test_a_tile_read_never_decodes_the_slide_and_is_cached(tmp_path: Path, monkeypatch) -> None:
    path = pyramid_tiff(tmp_path / "p.tiff")
    refs, _ = wsi.slide_tiles(path, "p.tiff")
    calls: list[tuple] = []
    real = openslide.OpenSlide.read_region

    def spy(self, location, level, size):
        calls.append((tuple(location), level, tuple(size)))
        return real(self, location, level, size)

    monkeypatch.setattr(openslide.OpenSlide, "read_region", spy)
    reader = wsi.TileReader()
    img = reader.read(refs[1])
    again = reader.read(refs[1])
    assert img is again and reader.reads == 1
    assert calls == [((1024, 0), 1, (512, 512))]  # one tile, at level 1: never the whole slide
    rgb = np.asarray(img)
    assert rgb.shape == (512, 512, 3) and tuple(rgb[0, 0]) == PINK and tuple(rgb[0, -1]) == WHITE
    assert wsi.read_tile(refs[0], 224).size == (224, 224)


def test_the_tissue_test_reads_only_a_coarse_level(tmp_path: Path, monkeypatch) -> None:
    path = pyramid_tiff(tmp_path / "p.tiff")
    levels: list[int] = []
    real = openslide.OpenSlide.read_region
    monkeypatch.setattr(openslide.OpenSlide, "read_region",
                        lambda self, loc, level, size: levels.append(level) or real(self, loc, level, size))
    wsi.slide_tiles(path, "p.tiff")
    assert levels and set(levels) == {2}  # 512² is the coarsest level, fine enough for 32 px/tile


def test_dicom_wsi_series_is_one_slide_and_unreadable_slides_name_the_file(tmp_path: Path) -> None:
    for name in ("boxes_0.dcm", "boxes_1.dcm", "small.svs", "unreadable.svs", "unopenable.tiff"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    slides, rest = wsi.split_slides(sorted(tmp_path.iterdir()))
    assert rest == [] and len(slides) == 5
    opts = {"tile_size": 8, "tile_mpp": 0.499, "min_tissue": 0.25}
    with pytest.raises(DataError, match=r"unopenable\.tiff: cannot open this whole-slide image"):
        wsi.index_slides(slides, tmp_path, **opts)
    refs, skipped, grids = wsi.index_slides(slides, tmp_path, on_error="skip", **opts)
    assert sorted(grids) == ["boxes_0.dcm", "small.svs"]  # boxes_1.dcm is the same series
    assert grids["boxes_0.dcm"] == 4 and {r.rel for r in refs} == {"boxes_0.dcm", "small.svs"}
    assert [s[0] for s in skipped] == ["unopenable.tiff", "unreadable.svs"]
    assert "unreadable.svs: cannot decode" in skipped[1][1]
    assert all(wsi.read_tile(r).size == (8, 8) for r in refs)


def test_a_slide_smaller_than_one_tile_is_refused() -> None:
    with pytest.raises(DataError, match=r"small\.svs: the slide \(16×16 px .*smaller than one tile"):
        wsi.slide_tiles(FIXTURES / "small.svs", "small.svs")


def test_plain_images_and_stripped_tiffs_stay_tiles(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), PINK).save(tmp_path / "t.tif")  # Pillow writes stripped TIFFs
    Image.new("RGB", (64, 64), PINK).save(tmp_path / "t.png")
    slides, rest = wsi.split_slides(sorted(tmp_path.iterdir()))
    assert slides == [] and len(rest) == 2


def test_dataset_mixes_slides_and_tiles(slides: Path) -> None:
    from PIL import Image

    Image.new("RGB", (224, 224), PINK).save(slides / "tile.png")
    ds = create("modality", "pathology").dataset(slides, train=True)
    assert ds.ids == ["a.tiff#x0_y0", "a.tiff#x1024_y0", "a.tiff#x0_y1024", "b.tiff#x0_y0", "b.tiff#x1024_y0",
                      "b.tiff#x0_y1024", "b.tiff#x1024_y1024", "tile.png#x0_y0"]
    assert ds.stats["images"] == 3 and ds.stats["background"] == 1
    x = ds.load(0, seed=3)["input"]
    assert x.shape == (3, 224, 224) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert ds.load(0, seed=3)["input"].equal(x)
    assert "tiles of a.tiff: 3" in ds.describe() and "tiles of b.tiff: 4" in ds.describe()
    import copy

    assert copy.deepcopy(ds).load(1)["input"].equal(ds.load(1)["input"])  # as DataLoader workers copy it


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medkit.cli.main", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=900)


@pytest.mark.slow
def test_cli_inspect_lists_tiles_per_slide_and_names_an_unreadable_one(slides: Path) -> None:
    out = _cli("data", "inspect", "--modality", "pathology", "--data", str(slides))
    assert out.returncode == 0, out.stderr
    assert "samples: 7" in out.stdout and "tiles of a.tiff: 3" in out.stdout and "tiles of b.tiff: 4" in out.stdout
    shutil.copy(FIXTURES / "unopenable.tiff", slides / "broken.tiff")
    bad = _cli("data", "inspect", "--modality", "pathology", "--data", str(slides), "--on-error", "raise")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "broken.tiff: cannot open this whole-slide image" in bad.stderr + bad.stdout


@pytest.mark.slow
def test_cli_run_trains_on_slides(slides: Path, tmp_path: Path) -> None:
    out = _cli("run", "--modality", "pathology", "--data", str(slides), "--preset", "tiny", "--max-steps", "5",
               "--run-dir", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-3000:]
    steps = (tmp_path / "run" / "metrics" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 5


@pytest.mark.slow
def test_cli_run_on_the_svs_dicom_wsi_and_tiff_fixtures(tmp_path: Path) -> None:
    data = tmp_path / "fixtures"
    data.mkdir()
    for name in ("small.svs", "boxes_0.dcm", "boxes_1.dcm", "boxes.tiff"):
        shutil.copy(FIXTURES / name, data / name)
    tiny = ["modality.pathology.tile_size=8", "modality.pathology.slide_mpp=0.5", "modality.pathology.tile_mpp=0.5",
            "modality.pathology.max_tiles_per_patient=20", "encoder.depth=2", "encoder.embed_dim=48",
            "encoder.num_heads=3", "trainer.batch_size=4", "trainer.eval_batches=1"]
    out = _cli("run", "--modality", "pathology", "--data", str(data), "--preset", "tiny", "--max-steps", "2",
               "--run-dir", str(tmp_path / "run"), *tiny)
    assert out.returncode == 0, out.stderr[-3000:]
    from medkit_plugin_pathology.modality import PathologyModality

    ds = PathologyModality(tile_size=8, slide_mpp=0.5, tile_mpp=0.5, max_tiles_per_patient=20).dataset(data, train=False)
    assert ds.stats["images"] == 3, "svs, one DICOM-WSI series (two files), tiff"
    assert len((tmp_path / "run" / "metrics" / "steps.jsonl").read_text().splitlines()) == 2
