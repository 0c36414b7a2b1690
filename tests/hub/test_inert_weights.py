"""A received run directory or Hub folder cannot act on the machine through its weight file: FIFOs,
devices and links out are refused at once, NaN weights are refused naming the tensor, and a run that is
being written cannot be pushed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medkit.api.errors import CheckpointError
from medkit.registry import get_host
from medkit.storage.files import load_tensors, save_tensors

from ..conftest import finishes




@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_special_files_as_model_are_refused_by_load_and_pull(run_copy: Path, tmp_path: Path, kind: str) -> None:
    from medkit.hub.hub import load_pretrained, pull

    model = run_copy / "model.safetensors"
    model.unlink()
    if kind == "fifo":
        os.mkfifo(model)
    else:
        model.symlink_to("/dev/zero")
    for call in (lambda: load_pretrained(run_copy, create=get_host().create), lambda: pull(str(run_copy), to=tmp_path / "pulled")):
        exc = finishes(call, 30.0, "loading blocked on the weight file")
        assert isinstance(exc, CheckpointError), exc
        assert str(model) in str(exc) and ("FIFO" in str(exc) or "/dev/zero" in str(exc))


def test_nan_weights_are_refused_naming_the_tensor(run_copy: Path, tmp_path: Path) -> None:
    from medkit.hub.hub import load_pretrained, load_pretrained_weights, pull

    path = run_copy / "model.safetensors"
    state = load_tensors(path)
    name = sorted(k for k in state if k.startswith("encoder.") and state[k].is_floating_point())[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    path.unlink()  # the run's model is a hard link to the checkpoint's: do not write through it
    save_tensors(path, state)
    with pytest.raises(CheckpointError, match=rf"tensor {name} holds 1 non-finite value"):
        load_pretrained(run_copy, create=get_host().create)
    with pytest.raises(CheckpointError, match=rf"{path}: tensor {name} holds 1 non-finite"):
        pull(str(run_copy), to=tmp_path / "pulled")
    model = _fresh_model(run_copy)
    with pytest.raises(CheckpointError, match=rf"tensor {name} holds"):
        load_pretrained_weights(model, run_copy)


def _fresh_model(run: Path):
    from medkit.hub.hub import pretrained_config
    from medkit.models.build import build_model

    return build_model(pretrained_config(run), create=get_host().create, assets_dir=run, with_heads=True)


def test_a_run_being_written_is_not_pushed(run_copy: Path, medkit_cli) -> None:
    code = ("import sys, time\nfrom medkit.storage.lock import run_lock\n"
            "with run_lock(sys.argv[1], 'run'):\n    print('GOT', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_copy)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "GOT"
        res = medkit_cli("push", str(run_copy), "--repo-id", "alice/x")
        assert res.exit_code == 1
        errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and f"is in use by PID {holder.pid}" in errors[0] and "medkit run" in errors[0]
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def medkit_cli():
    from click.testing import CliRunner

    from medkit.cli.main import cli

    return lambda *args: CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_weight_file_linked_inside_the_run_still_loads(run_copy: Path, tmp_path: Path) -> None:
    from medkit.hub.hub import load_pretrained

    model = run_copy / "model.safetensors"
    real = run_copy / "weights" / "model.safetensors"
    real.parent.mkdir()
    os.replace(model, real)
    model.symlink_to(Path("weights") / "model.safetensors")
    assert load_pretrained(run_copy, create=get_host().create) is not None
    outside = tmp_path / "elsewhere.safetensors"
    os.replace(real, outside)
    model.unlink()
    model.symlink_to(outside)
    with pytest.raises(CheckpointError, match=f"resolves to {outside}, outside"):
        load_pretrained(run_copy, create=get_host().create)
