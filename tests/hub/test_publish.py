"""What a push publishes: known answers for the filters, the sanitisers and the card pieces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medkit.api.errors import CheckpointError, ConfigError


@pytest.mark.parametrize("name, allowed", [
    ("teacher.encoder.blocks.0.attn.qkv.weight", True),
    ("ema_teacher.encoder.norm.weight", True),
    ("masks.encoder.blocks.1.mlp.fc1.weight", True),
    ("packnet.owners.blocks.0", True),
    ("predictor.0.weight", True),
    ("buffer.features", False),
    ("teacher_features.synth_a", False),
    ("teacher.bufferIds", False),
    ("fisher.encoder.blocks.0.weight", False),
    ("ewc.importance.encoder.w", False),
    ("anchor.encoder.blocks.0.weight", False),   # not on the allow-list: stays local
    ("masks.sample_index", False),
])
def test_strategy_tensor_allow_list(name: str, allowed: bool) -> None:
    from medkit.hub.publish import strategy_tensor_allowed

    assert strategy_tensor_allowed(name) is allowed


def test_filter_strategy_meta_known_answer() -> None:
    from medkit.hub.publish import filter_strategy_state

    meta = {"stage": 3, "momentum": 0.996, "buffer": {"synth_a": ["a/1.nii.gz#w3"]}, "name": "kmeans",
            "centroids_k": [4, 4], "chosen": ["a/1", "a/2"], "root": "/mnt/pacs", "note": "ok#1",
            "nested": {"dataRoot": "x", "lr_scale": 0.5}}
    _, kept, dropped = filter_strategy_state({}, meta)
    assert kept == {"stage": 3, "momentum": 0.996, "name": "kmeans", "centroids_k": [4, 4],
                    "nested": {"lr_scale": 0.5}}
    assert sorted(dropped) == sorted(f"state.json:{k}" for k in ["buffer", "chosen", "root", "note",
                                                                  "nested.dataRoot"])


def test_sanitizers_remove_local_paths(tmp_path: Path) -> None:
    from medkit.hub.publish import sanitize_config, sanitize_manifest

    cfg = {"run": {"data": {"ct": "/data/ct", "mri": None}, "uses": {}},
           "modality": {"ct": {"window": [-1000, 1000], "cache_dir": "~/cache", "sub": "rel/dir"}},
           "tokenizer": {"patch_3d": {"patch_size": 16}}}
    clean, removed = sanitize_config(cfg, tmp_path)
    assert clean["run"]["data"] == {"ct": None, "mri": None}
    assert clean["modality"]["ct"] == {"window": [-1000, 1000], "cache_dir": None, "sub": "rel/dir"}
    assert sorted(removed) == ["modality.ct.cache_dir", "run.data.ct"]
    assert cfg["run"]["data"]["ct"] == "/data/ct", "the run's own config is not modified"

    manifest, removed = sanitize_manifest({"data": {"ct": "/data/ct"}, "stages": [], "x": "C:\\scans"})
    assert manifest == {"stages": [], "x": None} and sorted(removed) == ["data", "x"]


def test_a_local_vocabulary_is_replaced_by_the_published_assets(tmp_path: Path) -> None:
    from medkit.hub.publish import sanitize_architecture

    arch = {"tokenizer": {"text_1d": {"vocab_file": "/home/me/vocab.json", "max_length": 64}}}
    with pytest.raises(CheckpointError, match="no tokenizers/text_1d/tokenizer.json"):
        sanitize_architecture(arch, tmp_path)
    (tmp_path / "tokenizers" / "text_1d").mkdir(parents=True)
    (tmp_path / "tokenizers" / "text_1d" / "tokenizer.json").write_text("{}")
    clean, _ = sanitize_architecture(arch, tmp_path)
    assert clean["tokenizer"]["text_1d"] == {"vocab_file": None, "max_length": 64}


def test_matrix_markdown_known_answer(tmp_path: Path) -> None:
    from medkit.hub.card import matrix_markdown, metric_of

    path = tmp_path / "matrix_knn_accuracy.csv"
    path.write_text("after_stage,stage_modalities,ct,mri\n1,ct,0.5,\n2,mri,0.25,0.875\n")
    assert metric_of(path) == "knn_accuracy" and metric_of(tmp_path / "matrix.csv") == "pretext_loss"
    assert matrix_markdown(path) == ("| after stage | trained on | ct | mri |\n|---|---|---:|---:|\n"
                                     "| 1 | ct | 0.5000 | – |\n| 2 | mri | 0.2500 | 0.8750 |")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not a medkit stage matrix"):
        matrix_markdown(tmp_path / "bad.csv")


def test_heatmap_is_a_png(tmp_path: Path) -> None:
    from medkit.hub.card import render_heatmap

    path = tmp_path / "matrix.csv"
    path.write_text("after_stage,stage_modalities,ct,mri\n1,ct,1.5,\n2,mri,1.25,0.9\n")
    out = render_heatmap(path, tmp_path / "out" / "matrix.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_license_and_card_metadata(synthetic_run: Path) -> None:
    from medkit.hub.card import card_metadata, check_license

    assert check_license("Apache-2.0") == "apache-2.0" and check_license("other") == "other"
    with pytest.raises(ConfigError, match="did you mean 'mit'"):
        check_license("mitt")
    arch = json.loads((synthetic_run / "config.json").read_text())
    manifest = json.loads((synthetic_run / "manifest.json").read_text())
    meta = card_metadata(arch=arch, manifest=manifest, license="cc-by-4.0")
    assert meta["library_name"] == "medkit" and meta["license"] == "cc-by-4.0"
    assert meta["tags"][:3] == ["medkit", "medical-imaging", "self-supervised"]
    assert meta["medkit"]["stages"] == [["synth_a"], ["synth_b"]]
    assert meta["medkit"]["encoder"] == {"depth": 2, "embed_dim": 48, "num_heads": 3, "mlp_ratio": 4.0}
