"""Tests of patch_2d / patch_3d: the tokenizer contract, positions, patchify layout and batching."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medkit.api import ConfigError, DataError
from medkit.testing import TokenizerContract, create


class TestPatch2DContract(TokenizerContract):
    name = "patch_2d"

    def make_samples(self) -> list[dict[str, Any]]:
        return [{"input": torch.randn(3, 32, 48), "id": f"img{i}.png"} for i in range(2)]

    def make_bad_sample(self) -> dict[str, Any]:
        return {"input": torch.randn(3, 30, 32), "id": "bad.png"}


class TestPatch3DContract(TokenizerContract):
    name = "patch_3d"

    def make_samples(self) -> list[dict[str, Any]]:
        return [{"input": torch.randn(1, 16, 32, 32), "id": f"vol.nii#w{i}"} for i in range(2)]

    def make_bad_sample(self) -> dict[str, Any]:
        return {"input": torch.randn(1, 15, 32, 32), "id": "vol.nii#w9"}


def _tok(name: str, embed_dim: int = 32, **kw: Any) -> Any:
    return create("tokenizer", name, embed_dim=embed_dim, **kw)


# -- declared attributes --------------------------------------------------------------------
def test_attributes_and_base_grids() -> None:
    t2, t3 = _tok("patch_2d"), _tok("patch_3d")
    assert (t2.dims, t2.adds_cls, t2.in_chans, t2.patch_size, t2.base_grid) == (2, True, 3, (16, 16), (14, 14))
    assert (t3.dims, t3.adds_cls, t3.in_chans, t3.patch_size, t3.base_grid) == (3, True, 1, (16, 16, 16), (1, 12, 12))
    assert tuple(t2.pos_embed.shape) == (1, 32, 14, 14) and tuple(t3.pos_embed.shape) == (1, 32, 1, 12, 12)
    assert t2.patch_dim == 768 and t3.patch_dim == 4096
    assert isinstance(t2.proj, torch.nn.Conv2d) and isinstance(t3.proj, torch.nn.Conv3d)


def test_position_table_starts_as_sincos() -> None:
    from medkit.api import sincos_init

    t = _tok("patch_2d", embed_dim=16, base_size=(64, 32))
    assert torch.equal(t.pos_embed.detach(), sincos_init(16, (4, 2)))


# -- grid-aware positions -------------------------------------------------------------------
def test_same_grid_gives_the_stored_table_bit_for_bit() -> None:
    t = _tok("patch_2d")
    stored = t.pos_embed.detach().flatten(2).transpose(1, 2)  # [1, 196, D]
    assert torch.equal(t.position_table((14, 14)).detach(), stored)


def test_512_input_gives_1024_tokens_with_resampled_positions() -> None:
    t = _tok("patch_2d", embed_dim=16)
    out = t(torch.randn(1, 3, 512, 512))
    assert out.x.shape == (1, 1024, 16) and out.grid == (32, 32)
    table = t.position_table((32, 32))
    assert table.shape == (1, 1024, 16)
    # resampled, not the reference's flat-index reuse of the first rows
    assert not torch.allclose(table[0, :196], t.position_table((14, 14))[0])


def test_3d_64_slices_give_576_tokens_and_each_slice_repeats_the_base_table() -> None:
    t = _tok("patch_3d", embed_dim=16)
    out = t(torch.randn(1, 1, 64, 192, 192))
    assert out.x.shape == (1, 576, 16) and out.grid == (4, 12, 12)
    base = t.position_table((1, 12, 12))[0]  # [144, D]
    table = t.position_table((4, 12, 12))[0].reshape(4, 144, 16)
    # trilinear resampling of a depth-1 table is constant along depth (known answer)
    for d in range(4):
        torch.testing.assert_close(table[d], base)


def test_positions_are_added_before_the_layernorm() -> None:
    t = _tok("patch_2d", embed_dim=16)
    with torch.no_grad():
        t.proj.weight.zero_()
        t.proj.bias.zero_()
    out = t(torch.randn(2, 3, 32, 32))
    expected = torch.nn.functional.layer_norm(t.position_table((2, 2)), (16,), eps=1e-5)
    torch.testing.assert_close(out.x, expected.expand(2, -1, -1))
    # tokens are row-major (h, w): token 1 is the patch at row 0, column 1
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 0:16, 16:32] = 1.0
    t2 = _tok("patch_2d", embed_dim=16)
    with torch.no_grad():
        t2.pos_embed.zero_()
    tokens = t2(x).x[0]
    moved = [(tokens[i] - tokens[0]).abs().sum().item() > 1e-6 for i in range(4)]
    assert moved == [False, True, False, False]


# -- patchify / unpatchify ------------------------------------------------------------------
def test_patchify_2d_layout_is_h_w_p_q_c() -> None:
    t = _tok("patch_2d", patch_size=2)
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    p = t.patchify(x)  # grid (2, 3), 12 values per patch
    assert p.shape == (2, 6, 12)
    # patch n = (h, w) = (1, 2) → index 1 * 3 + 2 = 5; inner layout (p, q, c)
    block = x[1, :, 2:4, 4:6]  # [C, p, q]
    assert torch.equal(p[1, 5], block.permute(1, 2, 0).reshape(-1))


def test_patchify_3d_layout_is_d_h_w_kd_kh_kw_c() -> None:
    t = _tok("patch_3d", patch_size=2, base_size=(2, 2, 2), in_chans=2)
    x = torch.randn(1, 2, 4, 2, 6)
    p = t.patchify(x)  # grid (2, 1, 3)
    assert p.shape == (1, 6, 16)
    # (d, h, w) = (1, 0, 2) → index 1 * 3 + 0 * 3 + 2 = 5
    block = x[0, :, 2:4, 0:2, 4:6]  # [C, kd, kh, kw]
    assert torch.equal(p[0, 5], block.permute(1, 2, 3, 0).reshape(-1))


@pytest.mark.parametrize("name,shape", [("patch_2d", (2, 3, 32, 48)), ("patch_3d", (2, 1, 32, 16, 48))])
def test_unpatchify_inverts_patchify(name: str, shape: tuple[int, ...]) -> None:
    t = _tok(name)
    x = torch.randn(*shape)
    grid = t.grid_of(x.shape)
    assert grid == tuple(s // 16 for s in shape[2:])
    assert torch.equal(t.unpatchify(t.patchify(x), grid), x)
    with pytest.raises(DataError, match="unpatchify"):
        t.unpatchify(t.patchify(x), (9,) * t.dims)


def test_anisotropic_3d_patches() -> None:
    t = _tok("patch_3d", patch_size=[4, 16, 16], base_size=[16, 32, 32])
    assert t.patch_size == (4, 16, 16) and t.base_grid == (4, 2, 2) and t.patch_dim == 1024
    x = torch.randn(1, 1, 8, 32, 16)
    assert t(x).grid == (2, 2, 1)
    assert torch.equal(t.unpatchify(t.patchify(x), (2, 2, 1)), x)


# -- collate ---------------------------------------------------------------------------------
def test_grey_samples_are_replicated_to_three_channels() -> None:
    t = _tok("patch_2d")
    grey = torch.rand(1, 32, 32)
    batch = t.collate([{"input": grey, "id": "a"}, {"input": torch.rand(3, 32, 32), "id": "b"}], "xray")
    inputs = batch["inputs"]
    assert inputs.shape == (2, 3, 32, 32) and inputs.dtype == torch.float32
    for c in range(3):
        assert torch.equal(inputs[0, c], grey[0])


def test_collate_error_names_modality_sample_and_shapes() -> None:
    t = _tok("patch_3d")
    bad = {"input": torch.zeros(1, 15, 192, 192), "id": "a.nii#w0"}
    with pytest.raises(DataError) as err:
        t.collate([bad], "ct")
    assert ("modality 'ct' sample 'a.nii#w0': got [1, 15, 192, 192], expected [1, D, H, W] "
            "with D, H, W multiples of 16") in str(err.value)


@pytest.mark.parametrize("value,got", [
    (torch.zeros(3, 32, 32, 1), "[3, 32, 32, 1]"),  # wrong rank
    (torch.zeros(2, 32, 32), "[2, 32, 32]"),  # wrong channels
    (torch.zeros(3, 8, 8), "[3, 8, 8]"),  # smaller than one patch
    ("a report", "str"),  # text given to an image tokenizer
])
def test_collate_rejects_bad_samples(value: Any, got: str) -> None:
    t = _tok("patch_2d")
    with pytest.raises(DataError, match="modality 'xray' sample 's1'") as err:
        t.collate([{"input": value, "id": "s1"}], "xray")
    assert f"got {got}, expected [3, H, W]" in str(err.value)


def test_collate_rejects_mixed_sizes() -> None:
    t = _tok("patch_2d")
    with pytest.raises(DataError, match="sample 'b'.*like sample 'a'"):
        t.collate([{"input": torch.zeros(3, 32, 32), "id": "a"}, {"input": torch.zeros(3, 48, 32), "id": "b"}],
                  "pathology")


def test_forward_rejects_unpatchable_inputs() -> None:
    with pytest.raises(DataError, match=r"patch_2d: got inputs \[1, 3, 30, 32\]"):
        _tok("patch_2d")(torch.zeros(1, 3, 30, 32))


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="base_size"):
        _tok("patch_2d", base_size=(200, 224))
    with pytest.raises(ConfigError, match="patch_size"):
        _tok("patch_3d", patch_size=(16, 16))


def test_hydra_zen_config_round_trip() -> None:
    from hydra_zen import builds, instantiate

    from medkit.testing import get_host

    spec = get_host().spec("tokenizer", "patch_3d")
    conf = builds(spec.load_factory(), populate_full_signature=True, zen_exclude=spec.context)
    tok = instantiate(conf(base_size=[32, 64, 64], patch_size=[16, 16, 16]), embed_dim=24)
    assert tok.base_grid == (2, 4, 4) and tok.embed_dim == 24
