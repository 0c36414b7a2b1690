"""Feature distillation from a frozen eval-mode teacher with the student's own mask."""

from __future__ import annotations

import torch

from medkit.api import Batch, RunContext, UniversalEncoder, make_noise, random_masking


def snapshot_teacher(encoder: UniversalEncoder) -> UniversalEncoder:
    """A frozen copy of ``encoder`` in ``eval()`` (no DropPath, no training-only noise)."""
    import copy

    teacher = copy.deepcopy(encoder)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def is_text(ctx: RunContext, batch: Batch) -> bool:
    """Whether ``batch`` holds token ids (1D) rather than images."""
    tok = ctx.encoder.tokenizers[ctx.tokenizer_of[batch.modality]]
    dims = getattr(tok, "dims", None)
    return dims == 1 if dims is not None else not batch.inputs.is_floating_point()


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
    """Mean squared difference of ``[B, T, D]`` features over non-padding tokens only."""
    diff = (student.float() - teacher.float()) ** 2  # [B, T, D]
    if padding is None:
        return diff.mean()
    keep = (~padding).to(diff.dtype).unsqueeze(-1)  # [B, T, 1]
    return (diff * keep).sum() / (keep.sum() * diff.shape[-1]).clamp_min(1.0)


def distillation_loss(ctx: RunContext, batch: Batch, teacher: UniversalEncoder, *, mask_ratio: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between student and teacher features of ``batch`` over non-padding tokens.

    Images: one noise draw (from ``generator`` or the global CPU RNG) gives the ``ids_keep`` that
    both encoders use, so they see exactly the same visible patches (+ CLS). Text: every token.
    The teacher runs under ``no_grad`` and must be in ``eval()``.
    """
    if teacher.training:
        raise RuntimeError("the distillation teacher must be in eval() mode")
    name = ctx.tokenizer_of[batch.modality]
    tokens = ctx.encoder.tokenize(name, batch.inputs, batch.attention_mask)  # [B, N, D]
    ids_keep = None
    if not is_text(ctx, batch) and mask_ratio > 0:
        b, n = tokens.x.shape[:2]
        noise = make_noise(b, n, device="cpu", generator=generator).to(tokens.x.device)
        ids_keep = random_masking(noise, mask_ratio).ids_keep  # [B, n_keep]
    add_cls = bool(getattr(ctx.encoder.tokenizers[name], "adds_cls", True))
    student = ctx.encoder.forward_tokens(tokens, ids_keep=ids_keep, add_cls=add_cls)
    with torch.no_grad():
        target = ctx.encode(batch, encoder=teacher, ids_keep=ids_keep)
    return masked_mse(student.x, target.x, student.padding_mask)
