"""Push a run to a Hub and pull it back through the real huggingface_hub client over HTTP."""

from __future__ import annotations

from medkit.registry import get_host

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.storage.files import load_tensors, save_tensors
from medkit.api.errors import CheckpointError, ConfigError

TOKEN = "hf_medkitSecretToken0123456789abcdefXYZ"  # the value tests/hub/conftest.py installs
#: huggingface_hub's LFS upload passes a file object as ``data=`` (httpx2 deprecation, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
BASE = {"model.safetensors", "config.json", "config.yaml", "manifest.json", "README.md", "matrix.png",
        "metrics/eval.json"}


def pushed(run: Path) -> set[str]:
    """What a push of ``run`` publishes: the base files and every stage matrix CSV."""
    return BASE | {f"metrics/{p.name}" for p in (run / "metrics").glob("matrix*.csv")}


def _assert_no_private_data(files: dict[str, bytes], run: Path) -> None:
    forbidden = [str(run.parent), "synth_a/0", "synth_b/0", TOKEN]
    for name, data in files.items():
        for needle in forbidden:
            assert needle.encode() not in data, f"{name} leaks {needle!r}"
        assert not name.startswith(("checkpoint/", "strategy/")) and name != "metrics/steps.jsonl", name


def test_push_then_pull_into_a_clean_cache_is_bit_identical(hub: Any, synthetic_run: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    from huggingface_hub import ModelCard, ModelCardData, metadata_load

    from medkit.hub.hub import load_pretrained, resolve_checkpoint
    from medkit.hub.push import push

    caplog.set_level(logging.DEBUG)
    result = push(synthetic_run, "alice/tiny-ct", license="mit", components=get_host())
    assert set(result.files) == pushed(synthetic_run) and "metrics/matrix.csv" in result.files
    remote = hub.files("alice/tiny-ct")
    assert set(remote) == pushed(synthetic_run) | {".gitattributes"}, "a push never carries buffers, checkpoints or metrics"
    _assert_no_private_data(remote, synthetic_run)
    assert remote["model.safetensors"] == (synthetic_run / "model.safetensors").read_bytes()
    # the weights went through the LFS batch + basic transfer, the card through the Hub's YAML check
    assert any(m == "PUT" and p.startswith("/_lfs/") for m, p, _ in hub.requests)
    assert "model.safetensors" in hub.repos["alice/tiny-ct"].resolve("main").lfs
    assert hub.validated and hub.validated[-1] == remote["README.md"].decode()
    assert all(auth for m, p, auth in hub.requests if m in ("POST", "PUT") and not p.startswith("/_lfs/"))

    manifest = json.loads(remote["manifest.json"])
    assert "data" not in manifest and manifest["published"]["removed"] == ["manifest.data"]
    assert manifest["files"]["model.safetensors"] == result_sha(remote["model.safetensors"])

    clean = tmp_path / "clean-home"
    monkeypatch.setenv("HF_HOME", str(clean))
    path = resolve_checkpoint("hf-hub:alice/tiny-ct")
    assert clean / "hub" in path.parents
    assert (path / "model.safetensors").read_bytes() == (synthetic_run / "model.safetensors").read_bytes()
    ours, theirs = load_tensors(synthetic_run / "model.safetensors"), load_tensors(path / "model.safetensors")
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)

    model = load_pretrained("hf-hub:alice/tiny-ct", create=get_host().create)
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())

    card = ModelCard.load(path / "README.md")
    assert card.data.library_name == "medkit" and card.data.license == "mit"
    assert {"medkit", "medical-imaging", "self-supervised", "synth_a", "synth_b", "sequential"} <= set(card.data.tags)
    assert card.data.to_dict()["medkit"]["stages"] == [["synth_a"], ["synth_b"]]
    assert ModelCardData(**card.data.to_dict()).to_dict() == card.data.to_dict()
    # the official validation posts to constants.ENDPOINT (read at import), which the fixture points at ours
    before = len(hub.validated)
    card.validate()
    assert len(hub.validated) == before + 1
    assert metadata_load(path / "README.md") == card.data.to_dict()
    assert "| after stage | trained on | synth_a | synth_b |" in card.text and "](matrix.png)" in card.text
    assert (path / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out, err = capfd.readouterr()
    assert TOKEN not in caplog.text and TOKEN not in out and TOKEN not in err
    assert caplog.text, "the logs were captured (the assertion above is not vacuous)"


def result_sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_cli_push_to_a_private_branch_and_pull_it(hub: Any, synthetic_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from medkit.cli.main import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["-v", "push", str(synthetic_run), "--repo-id", "alice/cli-run", "--private",
                              "--revision", "v2", "-m", "first"])
    assert res.exit_code == 0, res.output
    assert f"pushed {len(pushed(synthetic_run))} files" in res.stdout and "hf-hub:alice/cli-run@v2" in res.stdout, res.output
    assert TOKEN not in res.output
    repo = hub.repos["alice/cli-run"]
    assert repo.private and set(hub.files("alice/cli-run", "main")) == {".gitattributes"}
    assert set(hub.files("alice/cli-run", "v2")) == pushed(synthetic_run) | {".gitattributes"}

    res = runner.invoke(cli, ["pull", "hf-hub:alice/cli-run@v2", "--to", str(tmp_path / "got")])
    assert res.exit_code == 0, res.output
    got = Path(res.stdout.strip().splitlines()[-1])
    assert got == (tmp_path / "got").resolve()
    assert (got / "model.safetensors").read_bytes() == (synthetic_run / "model.safetensors").read_bytes()

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "other-home"))
    res = runner.invoke(cli, ["pull", "hf-hub:alice/cli-run@v2"])
    assert res.exit_code == 1, res.output
    assert "repository alice/cli-run not found" in res.output and "HF_TOKEN" in res.output, res.output


def test_a_vocabulary_from_a_local_file_travels_as_tokenizer_assets(hub: Any, report_run: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from medkit.hub.hub import load_pretrained
    from medkit.hub.push import push

    run = Path(shutil.copytree(report_run, tmp_path / "run"))
    vocab = tmp_path / "my-vocab" / "tokenizer.json"  # as if trained with `medkit tokenizer train`
    vocab.parent.mkdir()
    shutil.copy(run / "tokenizers" / "text_1d" / "tokenizer.json", vocab)
    arch = json.loads((run / "config.json").read_text())
    arch["tokenizer"]["text_1d"]["vocab_file"] = str(vocab)
    (run / "config.json").write_text(json.dumps(arch))

    result = push(run, "alice/report", components=get_host())
    assert {"tokenizers/text_1d/tokenizer.json", "tokenizers/text_1d/medkit_tokenizer.json"} <= set(result.files)
    pushed = json.loads(hub.files("alice/report")["config.json"])
    assert pushed["tokenizer"]["text_1d"]["vocab_file"] is None
    assert str(tmp_path).encode() not in hub.files("alice/report")["config.yaml"]

    shutil.rmtree(vocab.parent)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    model = load_pretrained("hf-hub:alice/report", create=get_host().create)
    tok = model.encoder.tokenizers["text_1d"]
    ids, _ = tok.encode(["no acute cardiopulmonary process"])
    assert tok.decode(ids[0]) == "no acute cardiopulmonary process"
    saved = load_tensors(run / "model.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_push_without_a_token_is_a_clear_error(hub: Any, synthetic_run: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.hub.push import push

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        push(synthetic_run, "alice/no-token", components=get_host())
    assert "alice/no-token" not in hub.repos


def test_missing_repo_and_revision_are_checkpoint_errors(hub: Any, synthetic_run: Path) -> None:
    from medkit.hub.hub import resolve_checkpoint
    from medkit.hub.push import push

    with pytest.raises(CheckpointError, match="repository alice/absent not found"):
        resolve_checkpoint("hf-hub:alice/absent")
    push(synthetic_run, "alice/there", components=get_host())
    with pytest.raises(CheckpointError, match="no revision 'nope'"):
        resolve_checkpoint("hf-hub:alice/there@nope")


def _write_strategy_state(run: Path) -> None:
    tensors = {
        "teacher.encoder.blocks.0.weight": torch.randn(4, 4),
        "masks.encoder.blocks.0.weight": torch.ones(4, 4, dtype=torch.bool),
        "owner.blocks.0": torch.zeros(3),
        "buffer.features": torch.randn(5, 8),      # cached features of patients' samples
        "teacher_features.synth_a": torch.randn(5, 8),
        "fisher.encoder.blocks.0.weight": torch.rand(4, 4),
        "buffer_ids": torch.arange(5),
    }
    save_tensors(run / "strategy" / "state.safetensors", tensors)
    meta = {"stage": 2, "teacher": {"momentum": 0.99}, "buffer_ids": ["synth_a/001", "synth_a/007"],
            "selected": ["synth_a/003"], "source": "/data/hospital/ct", "sampleCount": 5,
            "per_modality": {"synth_a": {"featureDim": 8, "k": 3}}}
    (run / "strategy" / "state.json").write_text(json.dumps(meta))


def test_strategy_state_is_never_pushed_by_default(hub: Any, run_copy: Path) -> None:
    from medkit.hub.push import push

    _write_strategy_state(run_copy)
    push(run_copy, "alice/plain", components=get_host())
    remote = hub.files("alice/plain")
    assert not [f for f in remote if f.startswith(("strategy/", "checkpoint/"))]
    _assert_no_private_data(remote, run_copy)


def test_include_strategy_state_pushes_only_the_allow_list(hub: Any, run_copy: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from safetensors.torch import load

    from medkit.hub.push import push

    _write_strategy_state(run_copy)
    caplog.set_level(logging.WARNING, logger="medkit")
    declared, asked = {"teacher", "masks", "owner"}, []  # what the run's strategy declares publishable
    result = push(run_copy, "alice/with-state", include_strategy_state=True, components=get_host(),
                  publishable=lambda strategy: asked.append(strategy) or sorted(declared))
    assert asked == [json.loads((run_copy / "manifest.json").read_text())["strategy"]]
    assert "--include-strategy-state" in caplog.text and "stay local" in caplog.text
    remote = hub.files("alice/with-state")
    assert {"strategy/state.safetensors", "strategy/state.json"} <= set(remote)
    assert set(load(remote["strategy/state.safetensors"])) == {
        "teacher.encoder.blocks.0.weight", "masks.encoder.blocks.0.weight", "owner.blocks.0"}
    assert json.loads(remote["strategy/state.json"]) == {  # ids, paths, sample/feature keys are gone
        "stage": 2, "teacher": {"momentum": 0.99}, "per_modality": {"synth_a": {"k": 3}}}
    assert json.loads(remote["manifest.json"])["published"]["strategy_state"] == {
        "subset": True, "tensors": ["masks.encoder.blocks.0.weight", "owner.blocks.0", "teacher.encoder.blocks.0.weight"],
        "left_out": 9}
    for data in remote.values():
        assert b"synth_a/00" not in data and b"/data/hospital" not in data
    assert "strategy/state.json" in result.files

    # a later push without the flag removes the earlier strategy files (and keeps the rest)
    again = push(run_copy, "alice/with-state", components=get_host())
    assert sorted(again.deleted) == ["strategy/state.json", "strategy/state.safetensors"]
    assert set(hub.files("alice/with-state")) == pushed(run_copy) | {".gitattributes"}


def test_heatmap_is_drawn_from_the_matrices_and_license_is_checked(hub: Any, run_copy: Path) -> None:
    from medkit.hub.push import push

    png = b"\x89PNG\r\n\x1a\n" + b"already drawn by the run"  # e.g. an old one-scale picture
    (run_copy / "metrics" / "matrix.png").write_bytes(png)
    push(run_copy, "alice/reuse", components=get_host())
    pushed_png = hub.files("alice/reuse")["matrix.png"]
    # the card's picture always matches the pushed numbers: drawn from the matrices, one panel per metric
    assert pushed_png != png and pushed_png[:8] == b"\x89PNG\r\n\x1a\n" and len(pushed_png) > 2000
    with pytest.raises(ConfigError, match="licence identifier"):
        push(run_copy, "alice/reuse", license="apache2", components=get_host())
    with pytest.raises(ConfigError, match="USER/NAME"):
        push(run_copy, "not a repo", components=get_host())
