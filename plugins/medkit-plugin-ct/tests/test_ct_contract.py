"""The ct modality passes the shared modality contract."""

from __future__ import annotations

from medkit.testing import ModalityContract


class TestCTContract(ModalityContract):
    name = "ct"


def test_demo_gives_enough_labelled_windows(tmp_path):
    from medkit.testing import create

    m = create("modality", "ct")
    ds = m.dataset(m.demo_data(tmp_path), train=False)
    assert len(ds) >= 24
    assert ds.class_names == ["boxes", "spheres"]
    assert set(ds.labels) == {0, 1}
    sample = ds.load(len(ds) - 1)
    assert sample["input"].shape == (1, 16, 192, 192)
    assert sample["input"].min() >= -1.0 and sample["input"].max() <= 1.0
    assert sample["label"] == ds.labels[-1]
