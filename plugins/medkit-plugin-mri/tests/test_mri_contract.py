"""The mri modality passes the shared modality contract."""

from __future__ import annotations

import torch

from medkit.testing import ModalityContract


class TestMRIContract(ModalityContract):
    name = "mri"


def test_demo_gives_enough_labelled_windows(tmp_path):
    from medkit.testing import create

    m = create("modality", "mri")
    ds = m.dataset(m.demo_data(tmp_path), train=False)
    assert len(ds) >= 24
    assert ds.class_names == ["atrophy", "normal"]
    assert set(ds.labels) == {0, 1}
    x = ds.load(len(ds) - 1)["input"]
    assert x.shape == (1, 16, 192, 192)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1.0) < 1e-3  # per-window z-score
    assert torch.isfinite(x).all()
