"""The xray modality passes the shared modality contract; its demo data exercise every reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medkit.testing import ModalityContract, create


class TestXrayContract(ModalityContract):
    name = "xray"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create("modality", "xray").demo_data(tmp_path_factory.mktemp("xray-demo"))


def test_demo_has_labels_dicoms_and_drops_the_lateral(demo_root: Path) -> None:
    m = create("modality", "xray")
    ds = m.dataset(demo_root, train=False)
    assert len(ds) == 42  # 40 PNGs + 2 frontal DICOMs
    assert ds.class_names == ["normal", "opacity"]
    assert sorted(set(ds.labels)) == [0, 1]
    assert "dicom/frontal_pa.dcm" in ds.ids and "dicom/frontal_ap_mono1.dcm" in ds.ids
    assert "dicom/lateral_ll.dcm" not in ds.ids
    assert [f for f, _ in ds.filtered] == ["dicom/lateral_ll.dcm"]
    assert "LL" in ds.filtered[0][1]
    everything = create("modality", "xray", frontal_only=False).dataset(demo_root, train=False)
    assert len(everything) == 43 and "dicom/lateral_ll.dcm" in everything.ids


def test_demo_samples_are_three_identical_channels_in_unit_range(demo_root: Path) -> None:
    ds = create("modality", "xray").dataset(demo_root, train=True)
    for i in (0, 1, 5):
        x = ds.load(i, seed=None)["input"]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
        assert float(x.std()) > 0.05  # an image, not a constant


def test_monochrome1_demo_is_flipped_back(demo_root: Path) -> None:
    """The MONOCHROME1 demo DICOM stores inverted values; read back, its lungs are dark like the
    MONOCHROME2 one (centre column = spine/mediastinum brighter than the lung fields)."""
    ds = create("modality", "xray").dataset(demo_root, train=False)
    for name in ("dicom/frontal_ap_mono1.dcm", "dicom/frontal_pa.dcm"):
        x = ds.load(ds.ids.index(name))["input"][0]
        lung, spine = x[90:130, 50:80].mean(), x[90:130, 108:116].mean()
        assert spine > lung + 0.2, name


def test_seeded_augmentation_differs_between_seeds_and_is_off_in_eval(demo_root: Path) -> None:
    train = create("modality", "xray").dataset(demo_root, train=True)
    plain = train.load(3, seed=None)["input"]
    views = [train.load(3, seed=s)["input"] for s in range(4)]
    assert all(v.shape == (3, 224, 224) for v in views)
    assert not torch.equal(views[0], views[1])
    assert not torch.equal(views[0], plain)
    evaluation = create("modality", "xray").dataset(demo_root, train=False)
    assert torch.equal(evaluation.load(3, seed=7)["input"], plain)


def test_config_fields_come_from_the_factory_signature() -> None:
    from hydra_zen import builds, instantiate

    from medkit.testing import get_host

    cfg = builds(get_host().spec("modality", "xray").load_factory(), populate_full_signature=True)
    m = instantiate(cfg, input_size=64, normalize="imagenet")
    assert m.options.input_size == 64 and m.options.normalize == "imagenet"
    assert cfg.frontal_only is True and cfg.on_error == "raise"
