"""The Python API (docs/python-api.md): ``medkit.run`` / ``medkit.fine_tune`` are the CLI's code path,
``load_pretrained(...)`` preprocesses and embeds through the modality plugins, ``run --config FILE``
starts from a saved or hand-written config through the received-file gate, and the page's example runs."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import REPO, run_cli, run_cli_in_process

SMALL = ["encoder.depth=1", "encoder.embed_dim=48", "encoder.num_heads=3", "trainer.eval_batches=1",
         "trainer.probe_linear_steps=0", "trainer.probe_knn_k=0", "trainer.batch_size=4"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny two-stage run made through ``medkit.run`` (shared by the tests of this file)."""
    import medkit

    out = tmp_path_factory.mktemp("api") / "run"
    result = medkit.run(modality=["ct", "xray"], preset="tiny", max_steps=2, run_dir=out, overrides=SMALL)
    assert result.run_dir == out and (out / "model.safetensors").is_file()
    return out


@pytest.mark.slow
def test_python_and_the_cli_write_the_same_run(api_run: Path, tmp_path: Path) -> None:
    """Same options → the same resolved config, manifest stages and (seeded, one thread) the same weights."""
    cli = tmp_path / "cli"
    out = run_cli("run", "--modality", "ct,xray", "--preset", "tiny", "--max-steps", "2", "--run-dir", str(cli),
                  *SMALL, env={"OMP_NUM_THREADS": str(torch.get_num_threads())})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (cli / "config.yaml").read_text() == (api_run / "config.yaml").read_text()
    import json

    a, b = (json.loads((d / "manifest.json").read_text()) for d in (api_run, cli))
    assert a["config_hash"] == b["config_hash"] and a["stages"] == b["stages"]
    assert sorted(p.name for p in api_run.iterdir()) == sorted(p.name for p in cli.iterdir())


def test_preprocess_is_the_evaluation_view_of_the_plugin(api_run: Path) -> None:
    import medkit
    from medkit.data.demo import demo_root
    from medkit.registry import get_host

    model = medkit.load_pretrained(api_run)
    assert model.modalities == ["ct", "xray"] and hasattr(model, "encoder") and "ct" in model.heads
    folder = demo_root() / "xray"
    files = sorted((folder / "images").glob("*.png"))[:3]
    ds = get_host().create("modality", "xray").dataset(files[1], train=False)
    want = ds.load(0, seed=None)["input"]
    got = model.preprocess(files[1], "xray")
    assert got.shape == (1, *want.shape) and torch.equal(got[0], want)
    ct = sorted((demo_root() / "ct").rglob("*.nii.gz"))[0]
    windows = model.preprocess(ct, "ct")
    assert windows.ndim == 5  # [windows, 1, D, H, W]
    assert windows.shape[0] == len(get_host().create("modality", "ct").dataset(ct, train=False))


def test_embed_takes_paths_arrays_and_lists(api_run: Path) -> None:
    import numpy as np

    import medkit
    from medkit.data.demo import demo_root
    from medkit.finetune.embed import pooled_features
    from medkit.registry import get_host

    model = medkit.load_pretrained(api_run)
    files = sorted((demo_root() / "xray" / "images").glob("*.png"))[:3]
    feats = model.embed(files, "xray")
    assert feats.shape == (3, 48) and torch.isfinite(feats).all()
    ds = get_host().create("modality", "xray").dataset(files[2], train=False)
    direct = pooled_features(model.encoder, "xray", model.tokenizer_of["xray"], ds, [0])
    assert torch.allclose(feats[2], direct[0], atol=1e-6), "embed is the probes' pooled feature"
    assert torch.allclose(model.embed(files[0], "xray")[0], feats[0], atol=1e-6)
    assert not torch.allclose(feats[0], feats[1]), "different images, different features"
    from PIL import Image

    grey = np.asarray(Image.open(files[0]))
    from_array = model.embed(grey, "xray")
    assert from_array.shape == (1, 48) and torch.allclose(from_array[0], feats[0], atol=1e-4), \
        "an array goes through the same readers and transforms as its file"
    vol = np.random.default_rng(0).normal(0, 300, size=(40, 40, 20)).astype("float32")
    assert model.embed([vol, vol], "ct").shape == (2, 48)


def test_embed_refuses_what_it_cannot_read(api_run: Path, tmp_path: Path) -> None:
    import medkit
    from medkit.api.errors import MedkitError

    model = medkit.load_pretrained(api_run)
    with pytest.raises(MedkitError, match="not an existing file"):
        model.embed(tmp_path / "missing.png", "xray")
    with pytest.raises(MedkitError, match=r"\[H, W\]"):
        model.preprocess(torch.zeros(2, 3, 4, 5), "xray")


# -- run --config FILE ----------------------------------------------------------------------------
def test_a_saved_config_with_overrides_on_top(api_run: Path, tmp_path: Path) -> None:
    from medkit.engine.launch import RunOptions, plan_run
    from medkit.registry import get_host

    saved = api_run / "config.yaml"
    cfg, target = plan_run(RunOptions(config_file=saved, max_steps=3, overrides=["optim.lr=5e-4"],
                                      run_dir=tmp_path / "again"), host=get_host())
    from medkit.config.yaml import load_run_config

    before = load_run_config(saved)
    assert cfg["run"]["modalities"] == ["ct", "xray"] and cfg["encoder"]["embed_dim"] == 48
    assert cfg["trainer"]["max_steps"] == 3 and cfg["optim"]["lr"] == 5e-4
    assert {k: v for k, v in cfg["trainer"].items() if k != "max_steps"} == \
        {k: v for k, v in before["trainer"].items() if k != "max_steps"}
    assert cfg["modality"] == before["modality"] and target == tmp_path / "again"
    cfg2, _ = plan_run(RunOptions(config_file=saved, modality=["ct"], preset="small"), host=get_host())
    assert cfg2["run"]["modalities"] == ["ct"] and cfg2["encoder"]["preset"] == "small"
    assert "xray" not in cfg2["modality"]


def test_a_hand_written_config_file(tmp_path: Path) -> None:
    own = tmp_path / "mine.yaml"
    own.write_text("run:\n  modalities: [ct]\n  strategy: ewc\nencoder:\n  preset: tiny\ntrainer:\n  max_steps: 7\n")
    out = run_cli_in_process("config", "show", "--config", str(own), "optim.lr=0.01")
    assert out.returncode == 0, out.stderr
    assert "  strategy: ewc\n" in out.stdout
    assert "  max_steps: 7\n" in out.stdout and "  lr: 0.01\n" in out.stdout and "  preset: tiny\n" in out.stdout


@pytest.mark.parametrize("text, says", [
    ("run:\n  modalities: [ct]\ntrainer:\n  max_steps: ${oc.env:HOME}\n", "interpolation"),
    ("run:\n  modalities: [ct]\nstrategy:\n  _target_: os.system\n", "_target_"),
    ("run:\n  modalities: [ct]\ntrainer:\n  max_step: 3\n", "no config key 'trainer.max_step'"),
    ("run:\n  modalities: [ct]\ntrainer:\n  max_steps: many\n", "max_steps"),
    ("run:\n  modalities: [ct]\ntrainer: !!python/object:os.system {}\n", "tag"),
])
def test_run_config_refuses_what_the_gate_refuses(tmp_path: Path, text: str, says: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = run_cli_in_process("run", "--config", str(bad), "--run-dir", str(tmp_path / "never"))
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert out.returncode == 1 and len(errors) == 1, out.stderr
    assert says in errors[0] and "bad.yaml" in errors[0], errors[0]
    assert not (tmp_path / "never").exists(), "refused before anything is written"


def test_config_show_prints_the_presets_values() -> None:
    from medkit.models.encoder import PRESETS

    out = run_cli_in_process("config", "show", "--modality", "ct", "--preset", "tiny")
    assert out.returncode == 0, out.stderr
    encoder = out.stdout.split("\nencoder:\n", 1)[1].split("\n", 10)
    assert not [line for line in encoder if line.strip().endswith(": null") and line.split(":")[0].strip() in
                PRESETS["tiny"]], encoder
    assert f"  depth: {PRESETS['tiny']['depth']}  # preset tiny" in out.stdout


# -- the page's example ---------------------------------------------------------------------------
def python_blocks(page: Path = REPO / "docs" / "python-api.md") -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


@pytest.mark.slow
def test_the_python_api_page_runs(tmp_path: Path) -> None:
    """docs/python-api.md's blocks, in order, as one notebook session, in a scratch folder."""
    blocks = python_blocks()
    assert len(blocks) >= 4 and any("medkit.fine_tune" in b for b in blocks)
    script = tmp_path / "notebook.py"
    script.write_text("\n\n".join(blocks))
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    took = time.monotonic() - start
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "runs" / "notebook" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "notebook-again" / "config.yaml").is_file()
    assert (tmp_path / "runs" / "notebook-xray" / "metrics.json").is_file()
    assert "torch.Size([4, 192])" in out.stdout and "torch.Size([1, 3, 224, 224])" in out.stdout
    assert took < 300, f"the notebook example took {took:.0f} s"
