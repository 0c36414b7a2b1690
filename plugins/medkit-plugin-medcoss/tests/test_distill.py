"""Distillation: an eval-mode frozen teacher, the student's own mask, padding excluded."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medkit.api import Batch
from medkit_plugin_medcoss.distill import distillation_loss, masked_mse, snapshot_teacher
from medkit_plugin_medcoss.strategy import make_rehearsal


def image_batch(role: str = "buffer") -> Batch:
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return Batch(modality="img", inputs=x, ids=["a", "b", "c"], role=role)


def record_forward_tokens(module: Any, log: list[Any]) -> None:
    inner = module.forward_tokens

    def wrapped(tokens: Any, **kw: Any) -> Any:
        log.append((module.training, kw.get("ids_keep")))
        return inner(tokens, **kw)

    module.forward_tokens = wrapped


def test_masked_mse_known_answer() -> None:
    s = torch.zeros(1, 3, 2)
    t = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [100.0, 100.0]]])
    assert masked_mse(s, t, torch.tensor([[False, False, True]])).item() == pytest.approx(2.5)
    assert masked_mse(s, t, None).item() == pytest.approx((2 + 8 + 20000) / 6)


def test_same_weights_in_eval_give_exactly_zero(make_ctx: Any) -> None:
    ctx = make_ctx("patch_2d")
    teacher = snapshot_teacher(ctx.encoder)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    ctx.encoder.eval()
    assert distillation_loss(ctx, image_batch(), teacher, mask_ratio=0.75).item() == 0.0
    ctx.encoder.train()  # DropPath active in the student only
    assert distillation_loss(ctx, image_batch(), teacher, mask_ratio=0.75).item() > 0.0


def test_text_distillation_is_zero_for_equal_weights_and_unmasked(make_ctx: Any) -> None:
    ctx = make_ctx("text_1d", ids={"rep": ["r0", "r1"]})
    tok = ctx.encoder.tokenizers["text_1d"]
    parts = tok.collate([{"input": "no acute findings", "id": "r0"},
                         {"input": "small left pleural effusion and mild cardiomegaly", "id": "r1"}], "rep")
    batch = Batch(modality="rep", inputs=parts["inputs"], attention_mask=parts["attention_mask"], role="buffer")
    teacher = snapshot_teacher(ctx.encoder)
    seen: list[Any] = []
    record_forward_tokens(teacher, seen)
    ctx.encoder.eval()
    assert distillation_loss(ctx, batch, teacher, mask_ratio=0.75).item() == 0.0
    assert seen[0][1] is None  # no token masking for text


def test_rehearsal_loss_uses_eval_teacher_and_the_students_mask(make_ctx: Any) -> None:
    ctx = make_ctx("patch_2d", ids={"img": ["i0", "i1", "i2"], "cur": ["c0", "c1"]}, stage=["cur"])
    strategy = make_rehearsal(distill_weight=2.0, mixup=True)
    strategy.teacher = snapshot_teacher(ctx.encoder)
    strategy.teacher.train()  # whatever happened to it, the loss runs it in eval()
    student_log: list[Any] = []
    teacher_log: list[Any] = []
    record_forward_tokens(ctx.encoder, student_log)
    record_forward_tokens(strategy.teacher, teacher_log)
    ctx.encoder.train()
    out = strategy.loss(ctx, image_batch())
    assert set(out.metrics) == {"distill"}
    assert out.loss.item() == pytest.approx(2.0 * float(out.metrics["distill"]))
    (s_training, s_keep), (t_training, t_keep) = student_log[0], teacher_log[0]
    assert s_training is True and t_training is False
    assert s_keep.shape == (3, 1) and torch.equal(s_keep, t_keep)  # 4 tokens, 25 % kept, same ids
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ctx.encoder.blocks.parameters())
    assert all(p.grad is None for p in strategy.teacher.parameters())


def test_current_batches_get_only_the_pretext_loss(make_ctx: Any) -> None:
    ctx = make_ctx("patch_2d")
    calls: list[str] = []

    class Head(torch.nn.Module):
        def forward(self, encoder: Any, batch: Batch, generator: Any = None) -> Any:
            from medkit.api import LossOutput

            calls.append(batch.role)
            return LossOutput(torch.tensor(1.5), {"mae": 1.5})

    ctx.heads["img"] = Head()
    out = make_rehearsal().loss(ctx, image_batch(role="current"))
    assert calls == ["current"] and out.metrics == {"mae": 1.5}
