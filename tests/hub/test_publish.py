"""What a push publishes: known answers for the filters, the sanitisers and the card pieces."""

from __future__ import annotations

import json
import os
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

    declared = ["teacher", "predictor", "masks", "owners"]  # what some strategy declares publishable
    assert strategy_tensor_allowed(name, declared) is allowed


def test_only_what_the_strategy_declares_is_publishable() -> None:
    """The strategy, not publish.py, says which of its state may travel; sensitive names never do."""
    from medkit.hub.publish import filter_strategy_state

    tensors = {"owner.blocks.0": 1, "teacher.encoder.w": 2, "fisher.0.w": 3, "owner.buffer_ids": 4}
    assert set(filter_strategy_state(tensors, {}, ["owner"])[0]) == {"owner.blocks.0"}
    assert set(filter_strategy_state(tensors, {}, ["teacher", "fisher"])[0]) == {"teacher.encoder.w"}
    assert filter_strategy_state(tensors, {})[0] == {}, "a strategy that declares nothing publishes nothing"


def test_strategies_declare_their_publishable_state() -> None:
    from medkit.hub.publish import PUBLISHABLE_STATE
    from medkit.registry import get_host

    host = get_host()
    declared = {name: host.spec("strategy", name).meta.get(PUBLISHABLE_STATE, [])
                for name in ("cassle", "rehearsal", "packnet", "ewc", "er", "sequential")
                if name in host.names("strategy")}
    expected = {"cassle": ["predictor", "teacher"], "rehearsal": ["teacher"], "packnet": ["owner"], "ewc": [],
                "er": [], "sequential": []}
    assert declared == {k: expected[k] for k in declared} and "sequential" in declared


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


PROVIDERS = {("tokenizer", "patch_3d"): "medkit-plugin-tokenizers", ("objective", "mae"): "medkit-plugin-mae",
             ("modality", "synth_a"): "medkit-plugin-synth", ("modality", "synth_b"): "medkit-plugin-synth"}


def _continued_copy(run_copy: Path) -> Path:
    """The run as if it had continued hf-hub:alice/base@v1, with a NaN cell from a modality
    without held-out data in an old-style (0-based, bare NaN) eval.json."""
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["from"] = {"ref": "hf-hub:alice/base@v1", "stages": [["synth_a"]], "strategy": "sequential"}
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    records = json.loads((run_copy / "metrics" / "eval.json").read_text())
    assert [r["after_stage"] for r in records] == [1, 2]
    records = [{"stage": r["after_stage"] - 1, "modalities": r["modalities"], "metrics": r["metrics"]}
               for r in records]  # the layout of runs written before the 1-based numbering
    records[-1]["metrics"]["pretext_loss"]["synth_a"] = float("nan")
    (run_copy / "metrics" / "eval.json").write_text(json.dumps(records))
    return run_copy


def test_card_is_model_card_data_with_lineage_results_and_install_line(run_copy: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard, metadata_load

    from medkit.eval.matrices import run_matrices
    from medkit.hub.publish import prepare_push

    run = _continued_copy(run_copy)
    from medkit.registry import get_host

    files = prepare_push(run, tmp_path / "staging", repo_id="alice/tiny", license="cc-by-4.0",
                         provider=lambda kind, name: PROVIDERS.get((kind, name)), host=get_host())
    card = ModelCard.load(files["README.md"])
    meta = metadata_load(files["README.md"])
    assert meta == card.data.to_dict()
    assert card.data.license == "cc-by-4.0" and card.data.library_name == "medkit"
    assert card.data.base_model == "alice/base", "a --from hf-hub: run names its base model"
    assert meta["medkit"]["stages"] == [["synth_a"], ["synth_b"]]
    # model-index: one entry per metric and modality of the last row, the matrix's own numbers
    matrices = run_matrices(run)
    expected = {(metric, m): v for metric, mx in matrices.items()
                for m, v in zip(mx.modalities, mx.rows[-1]) if v is not None}
    got = {(r.metric_type, r.dataset_name.split(" ")[0]): r.metric_value for r in card.data.eval_results}
    assert got == {k: pytest.approx(v, abs=1e-6) for k, v in expected.items()} and got
    assert {r.dataset_split for r in card.data.eval_results} == {"held-out"}
    assert all("better" in r.metric_name for r in card.data.eval_results)
    # the install line names the distributions the checkpoint needs, the modality plugins apart
    assert "pip install medkit medkit-plugin-tokenizers medkit-plugin-mae\n" in card.text
    assert "also needs `pip install medkit-plugin-synth`" in card.text
    # the published eval.json is strict JSON, counted from 1
    text = files["metrics/eval.json"].read_text()
    records = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the published eval.json"))
    assert [r["after_stage"] for r in records] == [1, 2]
    assert records[-1]["unavailable"]["pretext_loss"]["synth_a"]
    assert "n/a synth_a" in card.text
    assert files["matrix.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_card_without_a_provider_still_says_what_to_install(run_copy: Path) -> None:
    from huggingface_hub import ModelCard

    from medkit.eval.matrices import run_matrices
    from medkit.hub.card import render_card

    arch = json.loads((run_copy / "config.json").read_text())
    manifest = json.loads((run_copy / "manifest.json").read_text())
    card = ModelCard(render_card(repo_id="alice/tiny", arch=arch, manifest=manifest, license="mit",
                                 matrices=run_matrices(run_copy), heatmap=None, strategy_files=[]))
    assert card.data.base_model is None  # not continued from the Hub
    assert "pip install medkit\n" in card.text and "`medkit plugins list` names them" in card.text


def test_heatmap_is_a_png_with_one_panel_per_metric(run_copy: Path, tmp_path: Path) -> None:
    from medkit.eval.matrices import run_matrices
    from medkit.hub.card import render_heatmap

    matrices = run_matrices(run_copy)
    assert len(matrices) == 3
    out = render_heatmap(matrices, tmp_path / "out" / "matrix.png", objectives={"synth_a": "mae", "synth_b": "mae"})
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    keep = os.environ.get("MEDKIT_PICTURES")
    if keep:
        Path(keep, "card_matrix.png").write_bytes(data)


def test_license_and_card_metadata(synthetic_run: Path) -> None:
    from medkit.hub.card import card_metadata, check_license

    assert check_license("Apache-2.0") == "apache-2.0" and check_license("other") == "other"
    with pytest.raises(ConfigError, match="did you mean 'mit'"):
        check_license("mitt")
    arch = json.loads((synthetic_run / "config.json").read_text())
    manifest = json.loads((synthetic_run / "manifest.json").read_text())
    meta = card_metadata(arch=arch, manifest=manifest, license="cc-by-4.0").to_dict()
    assert meta["library_name"] == "medkit" and meta["license"] == "cc-by-4.0"
    assert meta["tags"][:3] == ["medkit", "medical-imaging", "self-supervised"]
    assert meta["medkit"]["stages"] == [["synth_a"], ["synth_b"]]
    assert meta["medkit"]["encoder"] == {"depth": 2, "embed_dim": 48, "num_heads": 3, "mlp_ratio": 4.0}
