"""``medkit convert medcoss``: key mapping, parity with a re-implementation of the reference
forward, the official-shaped checkpoint end to end, and refusal of other pickles."""

from __future__ import annotations

from medkit.registry import get_host

import argparse
import fractions
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medkit.storage.files import load_state_checked, sha256_file
from medkit.api.errors import CheckpointError
from medkit.interop.medcoss.keys import (DEAD_KEYS, MLM_BIAS_KEY, Layout, medkit_to_official, official_key_shapes,
                                      official_to_medkit)

pytest.importorskip("medkit_plugin_tokenizers")
for _plugin in ("medkit_plugin_report", "medkit_plugin_xray", "medkit_plugin_ct", "medkit_plugin_mae",
                "medkit_plugin_mlm"):
    pytest.importorskip(_plugin)

SMALL = {"depth": 2, "dim": 32, "mlp_dim": 128, "vocab_rows": 150, "text_positions": 24, "rows_2d": 16,
         "rows_3d": 24, "decoder_dim": 16, "decoder_depth": 1, "tokens_2d": 4, "tokens_3d": 4}
HEADS = 2


def _bert_vocab(path: Path) -> Path:
    words = ["no", "acute", "process", ".", "small", "left", "pleural", "effusion", "##s", "lung", "clear"]
    lines = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _random_official(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of ``shapes``, scaled so that the features stay O(1) through the layers."""
    g = torch.Generator().manual_seed(seed)
    return {k: 0.2 * torch.randn(s, generator=g) for k, s in shapes.items()}


# -- a re-implementation of the reference forward, official key names ---------------
class _Table(nn.Module):
    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.position_embeddings = nn.Embedding(rows, dim)


class _STPos(nn.Module):
    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.spatial_pos_embed = nn.Embedding(rows, dim)
        self.temporal_pos_embed = nn.Embedding(8, dim)


class _RefLayer(nn.Module):
    """Pre-norm, LayerScale, nn.MultiheadAttention with packed in_proj, GELU FFN, no dropout."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.gamma_1, self.gamma_2 = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.gamma_1 * self.self_attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.gamma_2 * self.linear2(F.gelu(self.linear1(self.norm2(x))))


class _RefBackbone(nn.Module):
    def __init__(self, s: dict[str, int], heads: int) -> None:
        super().__init__()
        dim = s["dim"]
        self.heads = heads
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.fused_encoder = nn.Module()
        self.fused_encoder.layers = nn.ModuleList([_RefLayer(dim, heads, s["mlp_dim"]) for _ in range(s["depth"])])
        self.token_embed = nn.Module()
        self.token_embed.embeddings = nn.Embedding(s["vocab_rows"], dim)
        self.token_embed.embeddings_norm = nn.LayerNorm(dim)
        self.token_embed.embeddings_pos = _Table(s["text_positions"], dim)
        self.token_embed.embeddings_token_type = nn.Embedding(2, dim)
        self.video_embed = nn.Module()
        self.video_embed.embeddings_norm = nn.LayerNorm(dim)
        self.video_embed.embeddings_pos = _Table(1600, dim)
        self.video_embed.embeddings_type = nn.Embedding(1, dim)
        self.video_embed.embeddings_st_pos_2D = _STPos(s["rows_2d"], dim)
        self.video_embed.embeddings_st_pos_3D = _STPos(s["rows_3d"], dim)
        self.video_embed.embeddings = nn.Conv2d(3, dim, 16, 16)
        self.video_embed.embeddings_3D = nn.Conv3d(1, dim, 16, 16)

    def _layers(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.fused_encoder.layers:
            x = layer(x, mask)
        return x

    def text(self, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        t = self.token_embed
        x = t.embeddings(ids) + t.embeddings_pos.position_embeddings(torch.arange(ids.shape[1]))
        x = t.embeddings_norm(x + t.embeddings_token_type.weight[0][None, None])
        seq = torch.arange(ids.shape[1])
        causal = (seq[None, None, :].repeat(ids.shape[0], ids.shape[1], 1) <= seq[None, :, None]).long()
        extended = (1.0 - causal * real[:, None, :]) * -10000.0  # [B, L, L]
        return self._layers(x, extended.repeat(self.heads, 1, 1))  # the reference's layout bug

    def image(self, data: torch.Tensor) -> torch.Tensor:
        v = self.video_embed
        conv, table = (v.embeddings, v.embeddings_st_pos_2D) if data.ndim == 4 else (v.embeddings_3D,
                                                                                    v.embeddings_st_pos_3D)
        x = conv(data).flatten(2).transpose(1, 2)  # [B, N, D]
        t = torch.randint(0, 8, size=(1,)) if self.training else torch.zeros(1, dtype=torch.long)
        pos = table.temporal_pos_embed(t).unsqueeze(1) + table.spatial_pos_embed(torch.arange(x.shape[1]))[None]
        x = v.embeddings_norm(x + pos)
        return self._layers(torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1), None)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small legacy medkit model (report, xray, ct) and a random official state dict of matching shapes."""
    from medkit.config.compose import Selection, compose
    from medkit.models.build import build_model

    vocab = _bert_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")
    cfg = compose(Selection(modalities=["report", "xray", "ct"], strategy="sequential", preset="tiny", overrides=[
        "encoder.depth=2", "encoder.embed_dim=32", f"encoder.num_heads={HEADS}", "encoder.legacy=true",
        f"tokenizer.text_1d.vocab_file={vocab}", "tokenizer.text_1d.max_length=16",
        "tokenizer.text_1d.legacy_vocab_rows=150", "tokenizer.text_1d.legacy_position_rows=24",
        "tokenizer.patch_2d.legacy_position_rows=16", "tokenizer.patch_2d.base_size=[32,32]",
        "tokenizer.patch_3d.legacy_position_rows=24", "tokenizer.patch_3d.base_size=[16,32,32]",
        "objective.mae.decoder_dim=16", "objective.mae.decoder_depth=1"]), host=get_host())
    model = build_model(cfg, create=get_host().create)
    official = _random_official(official_key_shapes(**SMALL))
    layout = Layout.from_config(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    conv = official_to_medkit(official, layout, expected)
    load_state_checked(model.modules(), conv.tensors, source="small", strict=True)
    model.modules().eval()
    return {"cfg": cfg, "model": model, "official": official, "layout": layout, "conv": conv}


def test_official_key_table_is_the_release() -> None:
    shapes = official_key_shapes()
    assert len(shapes) == 300 and sum(math.prod(s) for s in shapes.values()) == 199_205_635  # the official release
    backbone = [k for k in shapes if k.startswith(("fused_encoder.", "token_embed.", "video_embed.", "cls_token"))]
    assert sum(math.prod(shapes[k]) for k in backbone) == 132_330_240
    assert sum(math.prod(shapes[k]) for k in shapes if k.startswith("fused_encoder.")) == 85_072_896


def test_every_official_key_goes_somewhere_and_comes_back(small: dict[str, Any]) -> None:
    conv, official, layout, model = small["conv"], small["official"], small["layout"], small["model"]
    assert conv.missing == [] and set(conv.dropped) == set(DEAD_KEYS)
    assert set(conv.converted) == set(official) - set(DEAD_KEYS) and MLM_BIAS_KEY in conv.folded
    assert set(conv.tensors) == set(model.state_dict())
    state = model.state_dict()
    for ours, theirs in [("encoder.blocks.1.attn.qkv.weight", "fused_encoder.layers.1.self_attn.in_proj_weight"),
                         ("encoder.blocks.0.ls2.gamma", "fused_encoder.layers.0.gamma_2"),
                         ("encoder.tokenizers.patch_3d.norm.bias", "video_embed.embeddings_norm.bias"),
                         ("heads.ct.decoder_pred.weight", "decoder_pred_3D.weight"),
                         ("heads.xray.decoder_blocks.0.attn.qkv.weight", "decoder_blocks.0.attn.qkv.weight")]:
        assert torch.equal(state[ours], official[theirs]), ours
    grid = model.heads["xray"].decoder_positions((2, 2))  # [1, 1 + 4, d]: CLS row then the grid, row-major
    assert torch.equal(grid, official["decoder_pos_embed_2D"])
    back = medkit_to_official(state, layout)
    assert set(back) == set(official)
    exact = set(official) - set(DEAD_KEYS) - {MLM_BIAS_KEY, "mlm_head.transform.dense.bias"}
    assert [k for k in sorted(exact) if not torch.equal(back[k], official[k])] == []
    assert all(not back[k].any() for k in (*DEAD_KEYS, MLM_BIAS_KEY))
    # the MLM head: the reference adds decoder_pos_embed_1D[0] to the features; medkit folded it into the bias
    x = torch.randn(5, 32)
    h = F.linear(x + official[MLM_BIAS_KEY][0], official["mlm_head.transform.dense.weight"],
                 official["mlm_head.transform.dense.bias"])
    h = F.layer_norm(F.gelu(h), (32,), official["mlm_head.transform.LayerNorm.weight"],
                     official["mlm_head.transform.LayerNorm.bias"], eps=1e-12)
    reference = F.linear(h, official["mlm_head.decoder.weight"]) + official["mlm_head.bias"]
    with torch.no_grad():
        assert torch.allclose(model.heads["report"].head(x), reference, atol=1e-4)


def test_features_match_the_reference_forward(small: dict[str, Any]) -> None:
    """The parity bar: same weights, eval mode, fp32 tolerance 1e-5 per modality."""
    ref = _RefBackbone(SMALL, HEADS)
    backbone = {k: v for k, v in small["official"].items()
                if k.startswith(("cls_token", "fused_encoder.", "token_embed.", "video_embed."))}
    ref.load_state_dict(backbone, strict=True)
    ref.eval()
    encoder = small["model"].encoder
    tok = encoder.tokenizers["text_1d"]
    parts = tok.collate([{"input": t} for t in ["No acute process.", "Small left effusions.",
                                                   "Lung clear, no pleural effusion. Small left lung."]], "report")
    ids, mask = parts["inputs"], parts["attention_mask"]
    assert len(set(mask.sum(1).tolist())) == 3, "three paddings, so that the mask layout matters"
    torch.manual_seed(0)
    images, volumes = torch.randn(2, 3, 48, 32), torch.randn(2, 1, 16, 32, 48)
    with torch.no_grad():
        assert torch.allclose(encoder("text_1d", ids, mask).x, ref.text(ids, mask), atol=1e-5)
        assert torch.allclose(encoder("patch_2d", images).x, ref.image(images), atol=1e-5)
        assert torch.allclose(encoder("patch_3d", volumes).x, ref.image(volumes), atol=1e-5)
        one = encoder("text_1d", ids[2:], mask[2:]).x  # B = 1: the plain causal mask
        assert torch.allclose(one, ref.text(ids[2:], mask[2:]), atol=1e-5)
        assert (encoder("text_1d", ids, mask).x[2] - one[0]).abs().max() > 1e-4, "the layout bug is reproduced"


def test_a_head_that_does_not_fit_is_dropped_with_the_reason(small: dict[str, Any]) -> None:
    official = dict(small["official"])
    official["decoder_pos_embed_2D"] = torch.zeros(1, 10, 16)  # 9 patches do not make the 2x2 grid
    expected = {k: tuple(v.shape) for k, v in small["model"].state_dict().items()}
    conv = official_to_medkit(official, small["layout"], expected)
    assert "heads.xray.decoder_pos_embed" in conv.missing and "heads.xray.decoder_cls_pos" in conv.tensors
    assert conv.dropped["decoder_pos_embed_2D"].startswith("partly:")
    official["video_embed.embeddings_st_pos_2D.spatial_pos_embed.weight"] = torch.zeros(7, 32)
    with pytest.raises(CheckpointError, match="spatial_pos_embed.*legacy"):
        official_to_medkit(official, small["layout"], expected)
    del official["fused_encoder.layers.1.linear2.bias"]
    official["video_embed.embeddings_st_pos_2D.spatial_pos_embed.weight"] = torch.zeros(16, 32)
    with pytest.raises(CheckpointError, match="not an official MedCoSS checkpoint"):
        official_to_medkit(official, small["layout"], expected)


# -- the file: refusal of other pickles, and the official shapes end to end -------------------------------
def test_a_checkpoint_pickling_another_class_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.interop.medcoss import convert

    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 4)}, "epoch": 1, "args": fractions.Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match=r"fractions\.Fraction.*not an official MedCoSS checkpoint"):
        convert.load_official(path)
    monkeypatch.setattr(convert, "_unsafe_globals", lambda p: [])  # the weights-only unpickler refuses it too
    with pytest.raises(CheckpointError, match=r"fractions\.Fraction.*not an official MedCoSS checkpoint"):
        convert.load_official(path)
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        convert.load_official(tmp_path / "other.pth")
    ok = tmp_path / "ok.pth"
    torch.save({"model": {"cls_token": torch.ones(1, 1, 4)}, "epoch": 7, "args": argparse.Namespace(lr=0.1)}, ok)
    state, info = convert.load_official(ok)
    assert torch.equal(state["cls_token"], torch.ones(1, 1, 4)) and info["epoch"] == 7


def _official_file(path: Path) -> dict[str, torch.Tensor]:
    """Random tensors of every official key's shape. Tensors above 1M values repeat one random row (a stride-0
    view: torch.save stores the row only), so that the file stays small; shapes are exact."""
    g = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in official_key_shapes().items():
        if math.prod(shape) > 1_000_000:
            state[key] = torch.randn(1, *shape[1:], generator=g).expand(shape)
        else:
            state[key] = torch.randn(shape, generator=g)
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 299, "scaler": {},
                "args": argparse.Namespace(model="Unified_Model", mask_ratio=0.75, input_size=224)}, path)
    return state


@pytest.mark.slow
def test_the_official_checkpoint_converts_and_loads(tmp_path: Path, small: dict[str, Any]) -> None:
    from click.testing import CliRunner
    from safetensors import safe_open

    from medkit.cli.main import cli
    from medkit.hub.hub import load_pretrained

    ckpt = tmp_path / "checkpoint-299.pth"
    official = _official_file(ckpt)
    vocab = _bert_vocab(tmp_path / "vocab.txt")
    out = tmp_path / "medcoss"
    result = CliRunner().invoke(cli, ["convert", "medcoss", str(ckpt), str(out), "--vocab", str(vocab)])
    assert result.exit_code == 0, result.output
    assert "converted 298 of 300 official tensors" in result.output and "dropped 2" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    src = manifest["source"]
    assert src["sha256"] == sha256_file(ckpt) and src["epoch"] == 299 and src["kind"] == "medcoss-official"
    assert sorted(src["dropped"]) == sorted(DEAD_KEYS) and src["fresh"] == [] and len(src["converted"]) == 298
    assert manifest["stages_done"] == [["report"], ["xray"], ["ct"], ["mri"], ["pathology"]] and manifest["finished"]
    cfg = (out / "config.yaml").read_text()
    assert "legacy: true" in cfg and "preset: base" in cfg
    # the encoder through the standard loader: every encoder key, strict, no missing or unexpected one
    model = load_pretrained(str(out), with_heads=False, create=get_host().create)
    assert model.encoder.legacy and all(t.legacy for t in model.encoder.tokenizers.values())
    state = model.state_dict()
    assert sum(p.numel() for n, p in model.encoder.named_parameters() if n.startswith("blocks.")) == 85_072_896
    tables = {k: tuple(state[f"encoder.tokenizers.{k}"].shape) for k in (
        "patch_2d.pos.spatial.weight", "patch_2d.pos.temporal.weight", "patch_3d.pos.spatial.weight",
        "patch_3d.pos.temporal.weight", "text_1d.word_embed.weight", "text_1d.pos_embed.weight",
        "text_1d.type_embed.weight")}
    assert tables == {"patch_2d.pos.spatial.weight": (1024, 768), "patch_2d.pos.temporal.weight": (8, 768),
                      "patch_3d.pos.spatial.weight": (4096, 768), "patch_3d.pos.temporal.weight": (8, 768),
                      "text_1d.word_embed.weight": (49411, 768), "text_1d.pos_embed.weight": (512, 768),
                      "text_1d.type_embed.weight": (2, 768)}
    for ours, theirs in [("encoder.blocks.11.attn.qkv.weight", "fused_encoder.layers.11.self_attn.in_proj_weight"),
                         ("encoder.tokenizers.text_1d.word_embed.weight", "token_embed.embeddings.weight"),
                         ("encoder.tokenizers.patch_3d.norm.weight", "video_embed.embeddings_norm.weight")]:
        assert torch.equal(state[ours], official[theirs]), ours
    assert model.encoder.tokenizers["text_1d"].cls_token_id == 101
    # the heads: every modality's head has the keys of its objective (as in the small model) at release shapes
    def names(keys: Any, m: str) -> set[str]:  # head keys with block numbers folded (8 blocks here, 1 there)
        return {re.sub(r"\.\d+\.", ".N.", k.split(".", 2)[2]) for k in keys if k.startswith(f"heads.{m}.")}

    small_heads = {m: names(small["model"].state_dict(), m) for m in ("report", "xray", "ct")}
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
        assert {k for k in keys if k.startswith("encoder.")} == set(state)
        for m, like in {"report": "report", "xray": "xray", "pathology": "xray", "ct": "ct", "mri": "ct"}.items():
            assert names(keys, m) == small_heads[like], m
        assert torch.equal(fh.get_tensor("heads.pathology.decoder_pred.bias"), official["decoder_pred_2D.bias"])
        assert tuple(fh.get_slice("heads.mri.decoder_pred.weight").get_shape()) == (4096, 512)
        assert tuple(fh.get_slice("heads.report.head.decoder.weight").get_shape()) == (49411, 768)
    again = CliRunner().invoke(cli, ["convert", "medcoss", str(ckpt), str(out)])
    assert again.exit_code != 0 and "--force" in again.output
