"""The contract every downstream task plugin's tests subclass (``TaskContract``) and small helpers.

Usage in a task plugin's ``tests/test_contract.py``::

    from medkit.testing.tasks import TaskContract

    class TestSegmentation(TaskContract):
        name = "segmentation"
        dims = (2, 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

MODALITY_OF_DIMS = {1: "report", 2: "xray", 3: "ct"}


def tiny_backbone(dims: int, *, embed_dim: int = 48, depth: int = 2) -> Any:
    """A randomly initialised medkit encoder (2 blocks, width 48) with the default tokenizer of
    ``dims``, wrapped as a fine-tuning backbone."""
    from medkit.models.encoder import UniversalEncoder
    from medkit.finetune.backbones import EncoderBackbone
    from medkit.registry import create

    name = {1: "text_1d", 2: "patch_2d", 3: "patch_3d"}[dims]
    tok = create("tokenizer", name, embed_dim=embed_dim)
    encoder = UniversalEncoder({name: tok}, depth=depth, embed_dim=embed_dim, num_heads=3)
    return EncoderBackbone(encoder, name)


class TaskContract:
    """What every task guarantees: demo data its own readers split into three non-empty,
    disjoint splits; seeded augmentation; a finite loss that trains head and trunk; metrics with a
    float selection score; and pictures written as PNG files."""

    name: str = ""
    dims: tuple[int, ...] = (2,)
    options: dict[str, Any] = {}

    def make_task(self, dims: int) -> Any:
        from medkit.registry import create

        return create("task", self.name, dims=dims, modality=MODALITY_OF_DIMS[dims], **self.options)

    def test_demo_data_splits(self, tmp_path: Path) -> None:
        from medkit.api.protocols import Task

        for dims in self.dims:
            task = self.make_task(dims)
            assert isinstance(task, Task) and task.name == self.name and task.dims == dims
            root = task.demo_data(tmp_path / f"demo{dims}")
            assert task.demo_data(tmp_path / f"demo{dims}") == root, "demo_data must be idempotent"
            splits = task.splits(root, seed=0)
            assert set(splits) >= {"train", "val", "test"}
            ids = [set(splits[s].ids) for s in ("train", "val", "test")]
            assert all(ids), "every split must be non-empty"
            assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]), "splits must be disjoint"
            assert len(splits["train"].class_names or ()) >= 2

    @pytest.mark.slow  # writes the 3D demo volumes
    def test_augmentation_is_seeded(self, tmp_path: Path) -> None:
        import torch

        dims = self.dims[-1]
        task = self.make_task(dims)
        train = task.splits(task.demo_data(tmp_path / "demo"), seed=0)["train"]
        a, b = train.load(0, seed=7), train.load(0, seed=7)
        if isinstance(a["input"], torch.Tensor):
            assert torch.equal(a["input"], b["input"])
        else:
            assert a["input"] == b["input"]

    def test_train_step_and_evaluation(self, tmp_path: Path) -> None:
        import torch

        torch.manual_seed(0)
        dims = self.dims[0]
        task = self.make_task(dims)
        splits = task.splits(task.demo_data(tmp_path / "demo"), seed=0)
        names = list(splits["train"].class_names)
        backbone = tiny_backbone(dims)
        model = task.build_model(backbone, names)
        train = splits["train"]
        batch = task.collate([train.load(i, seed=i) for i in range(2)], backbone)
        out = task.loss(model, batch)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        out.loss.backward()
        trunk = [p.grad for n, p in model.named_parameters() if ".blocks." in n and p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in trunk), "the loss must train the trunk"
        model.eval()
        val = splits["val"]
        with torch.no_grad():
            result = task.evaluate(model, [task.collate([val.load(i)], backbone) for i in range(len(val))], names)
        assert isinstance(result["score"], float)
        assert result["metrics"] and all(isinstance(v, float) for v in result["metrics"].values())
        pictures = task.pictures(result, tmp_path / "pictures", names)
        assert pictures and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
