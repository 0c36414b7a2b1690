"""Tests of the ``mae`` objective: the objective contract (2D and 3D) and known answers for its maths."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medkit.api import ConfigError, UniversalEncoder, collate, make_noise, random_masking
from medkit.testing import ObjectiveContract, count_parameters, create


class TestMAE2DContract(ObjectiveContract):
    name = "mae"
    tokenizer = "patch_2d"

    def make_samples(self) -> list[dict[str, Any]]:
        return [{"input": torch.randn(3, 32, 32), "id": f"x{i}.png"} for i in range(3)]


class TestMAE3DContract(ObjectiveContract):
    name = "mae"
    tokenizer = "patch_3d"

    def make_samples(self) -> list[dict[str, Any]]:
        return [{"input": torch.randn(1, 16, 32, 32), "id": f"v.nii#w{i}"} for i in range(3)]


def _setup(tokenizer: str = "patch_2d", width: int = 32, depth: int = 1, images: list[torch.Tensor] | None = None,
           tok_kw: dict[str, Any] | None = None, **obj_kw: Any) -> tuple[Any, Any, Any]:
    tok = create("tokenizer", tokenizer, embed_dim=width, **(tok_kw or {}))
    encoder = UniversalEncoder({tokenizer: tok}, depth=depth, embed_dim=width, num_heads=max(1, width // 32))
    objective = create("objective", "mae", encoder=encoder, tokenizer=tokenizer, **obj_kw)
    batch = collate([{"input": x, "id": str(i)} for i, x in enumerate(images or [])], "demo", tok) if images else None
    return encoder, objective, batch


def _zero_pred(objective: Any) -> None:
    with torch.no_grad():
        objective.decoder_pred.weight.zero_()
        objective.decoder_pred.bias.zero_()


# -- the decoder's shape --------------------------------------------------------------------
def test_default_decoder_shapes() -> None:
    from medkit_plugin_mae.objective import decoder_shape

    assert decoder_shape(768) == (512, 8, 16)  # MedCoSS's MAE decoder: 512 wide, 8 blocks, 16 heads
    assert decoder_shape(1024) == (512, 8, 16)
    assert decoder_shape(384) == (192, 4, 6)
    assert decoder_shape(192) == (96, 2, 3)  # the tiny preset
    assert decoder_shape(48) == (32, 1, 1)
    assert decoder_shape(192, dim=100) == (100, 2, 2)  # heads divide dim
    with pytest.raises(ConfigError, match="decoder_heads"):
        decoder_shape(192, dim=96, heads=5)


def test_base_decoder_parameter_count_matches_the_spec() -> None:
    """MedCoSS's MAE decoder (``decoder_*`` + ``mask_token``) = 28,284,672 for both 2D and 3D heads
    together. Ours is one objective per tokenizer; the shared parts (embed, mask token, 8 blocks, norm)
    are counted once, the per-dimension parts (positions incl. CLS row, prediction head) once each."""
    tok2 = create("tokenizer", "patch_2d", embed_dim=768)
    tok3 = create("tokenizer", "patch_3d", embed_dim=768)
    encoder = UniversalEncoder({"patch_2d": tok2, "patch_3d": tok3}, depth=0, embed_dim=768, num_heads=12)
    mae2 = create("objective", "mae", encoder=encoder, tokenizer="patch_2d")
    mae3 = create("objective", "mae", encoder=encoder, tokenizer="patch_3d")
    assert len(mae2.decoder_blocks) == 8 and mae2.decoder_dim == 512
    shared = sum(count_parameters(mae2, p) for p in ("decoder_embed", "mask_token", "decoder_blocks", "decoder_norm"))
    pos2 = count_parameters(mae2, "decoder_pos_embed") + count_parameters(mae2, "decoder_cls_pos")
    pos3 = count_parameters(mae3, "decoder_pos_embed") + count_parameters(mae3, "decoder_cls_pos")
    assert pos2 == 197 * 512 and pos3 == 145 * 512  # decoder_pos_embed_2D (1,197,512) / _3D (1,145,512)
    assert count_parameters(mae2, "decoder_pred") == 768 * 512 + 768
    assert count_parameters(mae3, "decoder_pred") == 4096 * 512 + 4096
    assert count_parameters(mae2) == 26_109_184 and count_parameters(mae3) == 27_789_824
    assert count_parameters(mae2) + count_parameters(mae3) - shared == 28_284_672


# -- masking ----------------------------------------------------------------------------------
@pytest.mark.parametrize("tokenizer,shape,tok_kw,n_tok", [
    ("patch_2d", (3, 28, 28), {"patch_size": 2, "base_size": (28, 28)}, 196),
    ("patch_3d", (1, 2, 24, 24), {"patch_size": 2, "base_size": (2, 24, 24)}, 144),
])
def test_mask_count_is_n_minus_int_quarter_n(tokenizer: str, shape: tuple[int, ...], tok_kw: dict[str, Any],
                                             n_tok: int) -> None:
    encoder, objective, batch = _setup(tokenizer, images=[torch.randn(*shape) for _ in range(2)], tok_kw=tok_kw)
    latent, masking, grid = objective.forward_encoder(encoder, batch.inputs, torch.Generator().manual_seed(0))
    n_keep = int(n_tok * 0.25)  # 49 of 196 (2D), 36 of 144 (3D)
    assert latent.shape == (2, 1 + n_keep, 32)  # [CLS] + visible tokens
    assert masking.mask.sum(dim=1).tolist() == [n_tok - n_keep] * 2
    assert masking.ids_keep.shape == (2, n_keep)


# -- loss known answers -------------------------------------------------------------------------
def _hand_loss_zero_pred(images: list[torch.Tensor], mask: torch.Tensor, patch: int, unbiased: bool) -> float:
    """Mean over masked patches of mean(t²), t = (x - μ) / sqrt(var + 1e-6), by explicit loops."""
    total, count = 0.0, 0
    for b, img in enumerate(images):
        gw = img.shape[2] // patch
        for n in range(mask.shape[1]):
            if mask[b, n] != 1:
                continue
            i, j = divmod(n, gw)
            vals = [float(v) for v in img[:, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch].flatten()]
            mu = sum(vals) / len(vals)
            ss = sum((v - mu) ** 2 for v in vals)
            var = ss / (len(vals) - 1) if unbiased else ss / len(vals)
            total += sum((v - mu) ** 2 / (var + 1e-6) for v in vals) / len(vals)
            count += 1
    return total / count


def test_zero_prediction_loss_equals_the_hand_computation() -> None:
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 8, 12, generator=g) * 4 - 1 for _ in range(2)]
    encoder, objective, batch = _setup(images=images, tok_kw={"patch_size": 2, "base_size": (8, 8)})
    _zero_pred(objective)
    out = objective(encoder, batch, generator=torch.Generator().manual_seed(5))
    n_tok = 4 * 6
    mask = random_masking(make_noise(2, n_tok, generator=torch.Generator().manual_seed(5)), 0.75).mask
    assert mask.sum().item() == 2 * (n_tok - int(n_tok * 0.25))
    expected = _hand_loss_zero_pred(images, mask, 2, unbiased=True)
    biased = _hand_loss_zero_pred(images, mask, 2, unbiased=False)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert float(out.metrics["mae"]) == pytest.approx(expected, rel=1e-5)
    # P = 12 values per patch: the unbiased variance gives ≈ 11/12, the biased one ≈ 1
    assert expected == pytest.approx(11 / 12, rel=1e-3) and abs(out.loss.item() - biased) > 0.05


def test_norm_pix_target_uses_the_unbiased_variance() -> None:
    encoder, objective, _ = _setup(tok_kw={"patch_size": 2, "base_size": (2, 2)}, tokenizer="patch_2d")
    x = torch.arange(12, dtype=torch.float32).reshape(1, 2, 2, 3).permute(0, 3, 1, 2)  # one patch, values 0..11
    target = objective.target(encoder, x)[0, 0]
    mean, var = 5.5, 13.0  # sum((k - 5.5)^2, k=0..11) = 143 → 143 / 11
    torch.testing.assert_close(target, (torch.arange(12.0) - mean) / (var + 1e-6) ** 0.5)


def test_without_norm_pix_loss_the_raw_pixels_are_the_target() -> None:
    images = [torch.full((3, 32, 32), 2.0) for _ in range(2)]
    encoder, objective, batch = _setup(images=images, norm_pix_loss=False)
    _zero_pred(objective)
    out = objective(encoder, batch, generator=torch.Generator().manual_seed(0))
    assert out.loss.item() == pytest.approx(4.0)  # mean of (0 - 2)^2
    # and it trains (the reference crashes here)
    _, objective, _ = _setup(images=images, norm_pix_loss=False)
    out = objective(encoder, batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and objective.decoder_pred.weight.grad.abs().sum() > 0


def test_constant_patches_have_zero_normalised_target() -> None:
    encoder, objective, batch = _setup(images=[torch.full((3, 32, 32), 7.0)] * 2)
    _zero_pred(objective)
    assert objective(encoder, batch, generator=torch.Generator().manual_seed(0)).loss.item() == pytest.approx(0.0)


# -- decoder positions ----------------------------------------------------------------------
def test_decoder_positions_are_grid_aware() -> None:
    from medkit.api import sincos_init

    encoder, objective, _ = _setup("patch_3d")
    assert objective.base_grid == (1, 12, 12)
    assert torch.equal(objective.decoder_pos_embed.detach(), sincos_init(objective.decoder_dim, (1, 12, 12)))
    same = objective.decoder_positions((1, 12, 12))
    assert same.shape == (1, 145, objective.decoder_dim)
    assert torch.equal(same[:, 0], objective.decoder_cls_pos[:, 0])  # CLS row first
    assert torch.equal(same[0, 1:], objective.decoder_pos_embed.detach().flatten(2)[0].T)
    deeper = objective.decoder_positions((4, 12, 12))
    assert deeper.shape == (1, 577, objective.decoder_dim)
    torch.testing.assert_close(deeper[0, 1:].reshape(4, 144, -1)[3], same[0, 1:])


def test_a_larger_input_than_the_base_grid_trains() -> None:
    encoder, objective, batch = _setup(images=[torch.randn(3, 64, 48) for _ in range(2)],
                                       tok_kw={"base_size": (32, 32)})
    out = objective(encoder, batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and objective.decoder_pos_embed.grad is not None


# -- reconstruction and state ---------------------------------------------------------------
def test_reconstruct_returns_images_and_the_pixel_mask() -> None:
    images = [torch.rand(3, 32, 48) for _ in range(2)]
    encoder, objective, batch = _setup(images=images)
    _zero_pred(objective)
    pred, mask = objective.reconstruct(encoder, batch, torch.Generator().manual_seed(0))
    assert pred.shape == mask.shape == (2, 3, 32, 48)
    assert mask.mean().item() == pytest.approx((6 - int(6 * 0.25)) / 6)
    # a zero prediction in normalised units maps back to each patch's own mean
    tok = encoder.tokenizers["patch_2d"]
    patch_mean = tok.patchify(batch.inputs).mean(-1, keepdim=True).expand(-1, -1, 768)
    torch.testing.assert_close(pred, tok.unpatchify(patch_mean, (2, 3)))


def test_objective_holds_only_its_heads() -> None:
    _, objective, _ = _setup()
    names = list(objective.state_dict())
    assert names and all(n.startswith(("decoder_", "mask_token")) for n in names)
    assert objective.decoder_blocks[0].norm1.eps == 1e-6 and objective.decoder_norm.eps == 1e-6
    assert torch.equal(objective.decoder_embed.bias, torch.zeros_like(objective.decoder_embed.bias))


def test_bad_configuration_is_a_config_error() -> None:
    tok = create("tokenizer", "patch_2d", embed_dim=32)
    encoder = UniversalEncoder({"patch_2d": tok, "text": torch.nn.Identity()}, depth=1, embed_dim=32, num_heads=1)
    with pytest.raises(ConfigError, match="lacks patchify"):
        create("objective", "mae", encoder=encoder, tokenizer="text")
    with pytest.raises(ConfigError, match="no tokenizer 'patch_3d'"):
        create("objective", "mae", encoder=encoder, tokenizer="patch_3d")
    with pytest.raises(ConfigError, match="mask_ratio"):
        create("objective", "mae", encoder=encoder, tokenizer="patch_2d", mask_ratio=1.0)


def test_hydra_zen_config_round_trip() -> None:
    from hydra_zen import builds, instantiate

    from medkit.testing import get_host

    spec = get_host().spec("objective", "mae")
    conf = builds(spec.load_factory(), populate_full_signature=True, zen_exclude=spec.context)
    tok = create("tokenizer", "patch_2d", embed_dim=32)
    encoder = UniversalEncoder({"patch_2d": tok}, depth=1, embed_dim=32, num_heads=1)
    objective = instantiate(conf(decoder_dim=64, decoder_depth=2), encoder=encoder, tokenizer="patch_2d")
    assert objective.decoder_dim == 64 and len(objective.decoder_blocks) == 2 and objective.mask_ratio == 0.75
