"""The classification task honours the task contract in 2D, 3D and (with text_1d) 1D."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkit.testing import TaskContract, tiny_backbone


class TestClassification(TaskContract):
    name = "classification"
    dims = (2, 3)


def _text_tokenizer_registered() -> bool:
    from medkit.testing import get_host

    return "text_1d" in get_host().names("tokenizer")


def test_text_classification_step(tmp_path: Path) -> None:
    if not _text_tokenizer_registered():
        pytest.skip("tokenizer text_1d (medkit-plugin-tokenizers) is not registered, so 1D text cannot be encoded")
    import torch

    from medkit.testing import create

    task = create("task", "classification", dims=1, modality="report")
    splits = task.splits(task.demo_data(tmp_path / "demo"), seed=0)
    assert len(splits["train"].class_names) == 5
    backbone = tiny_backbone(1)
    model = task.build_model(backbone, splits["train"].class_names)
    batch = task.collate([splits["train"].load(i) for i in range(4)], backbone)
    assert batch.attention_mask is not None and batch.inputs.shape == batch.attention_mask.shape
    out = task.loss(model, batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.head.fc2.weight.grad is not None and isinstance(model.head.fc_norm, torch.nn.Identity)
