"""``--resume`` from hostile starting states: a ``current`` leading outside the run, to a missing
generation or to another run's generation, and two generations with one number are refused with one
line, and the run directory is byte-identical afterwards (every name, link and file's bytes). A torn
step-log tail heals with a warning naming the step; a bad line before it is refused naming the line;
a checkpoint that hits a full disk leaves no staging folder."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from medkit.api.errors import CheckpointError
from medkit.storage.files import load_tensors
from medkit.storage.jsonl import read_jsonl
from medkit.testing.synthetic import run_synthetic

OVERRIDES = ("trainer.checkpoint_every=2",)


def _resume(run: Path) -> dict[str, Any]:
    from medkit.api.progress import NullReporter
    from medkit.engine.engine import Engine, load_config
    from medkit.registry import get_host

    return Engine(load_config(run), run, components=get_host(), reporter=NullReporter(), resume=True).run()


def snapshot(root: Path) -> dict[str, Any]:
    """Every name under ``root`` with what it is: a link's target, a file's bytes, a folder."""
    out: dict[str, Any] = {}
    for here, dirs, names in os.walk(root):
        for n in dirs + names:
            p = Path(here) / n
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


def _steps(run: Path) -> list[dict[str, Any]]:
    rows = read_jsonl(run / "metrics" / "steps.jsonl")
    return [{k: v for k, v in r.items() if k not in ("time_s", "data_s")} for r in rows]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hostile")
    run = run_synthetic(root / "run", "sequential", max_steps=4, overrides=OVERRIDES, demo_dir=root / "demo")
    other = run_synthetic(root / "other", "sequential", max_steps=4, overrides=OVERRIDES, seed=1,
                          demo_dir=root / "demo")  # the same architecture: only its identity tells them apart
    return {"run": run, "other": other, "demo": root / "demo", "steps": _steps(run),
            "weights": load_tensors(run / "model.safetensors")}


@pytest.fixture
def copy(finished: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MEDKIT_DEMO_DIR", str(finished["demo"]))
    from medkit.testing.synthetic import use_synthetic_host

    use_synthetic_host()
    return lambda name="run": Path(shutil.copytree(finished[name], tmp_path / name, symlinks=True))


def _generations(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "generations").iterdir() if p.name.startswith("g-"))


def _refused(run: Path, *fragments: str) -> str:
    before = snapshot(run)
    with pytest.raises(CheckpointError) as info:
        _resume(run)
    message = str(info.value)
    assert "\n" not in message and "nothing was changed" in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert snapshot(run) == before, "a refused resume changes nothing in the run directory"
    return message


def test_current_pointing_outside_the_run_is_refused_and_nothing_is_deleted(copy, tmp_path: Path) -> None:
    run = copy()  # the reproduction: a copy of the newest generation elsewhere, as g-00000001
    newest = _generations(run)[-1]
    elsewhere = tmp_path / "elsewhere" / "g-00000001"
    shutil.copytree(run / "generations" / newest, elsewhere)
    (run / "current").unlink()
    (run / "current").symlink_to(elsewhere)
    message = _refused(run, "points outside this run's generations/", f"ln -sfn generations/{newest}")
    assert len(_generations(run)) == 2, message
    (run / "current").unlink()  # the fix the message gives
    (run / "current").symlink_to(f"generations/{newest}")
    _resume(run)
    assert json.loads((run / "manifest.json").read_text())["finished"] is True


def test_current_pointing_to_a_missing_generation_is_refused(copy) -> None:
    run = copy()
    (run / "current").unlink()
    (run / "current").symlink_to("generations/g-00000099")
    _refused(run, "generations/g-00000099, which does not exist")


def test_a_generation_of_another_run_is_refused(copy, finished: dict[str, Any]) -> None:
    run = copy()
    foreign = finished["other"] / "current"
    shutil.copytree(foreign.resolve(), run / "generations" / "g-00000009")
    (run / "current").unlink()
    (run / "current").symlink_to("generations/g-00000009")
    _refused(run, "generations/g-00000009, a generation of another run")


def test_two_generations_with_one_number_are_refused(copy) -> None:
    run = copy()
    newest = _generations(run)[-1]
    shutil.copytree(run / "generations" / newest, run / "generations" / "g-00000050")
    _refused(run, f"generations/{newest} and generations/g-00000050 both say they are generation")


def test_a_generation_without_its_identity_is_refused(copy) -> None:
    run = copy()
    (run / "current").resolve().joinpath("generation.json").unlink()
    _refused(run, "has no readable generation.json")


def test_a_torn_step_log_tail_heals_and_every_step_is_logged_once(copy, finished: dict[str, Any],
                                                                  caplog) -> None:
    run = copy()
    older = run / "generations" / _generations(run)[0]  # a kill before the newest commit leaves this current
    (run / "current").unlink()
    (run / "current").symlink_to(f"generations/{older.name}")
    position = json.loads((older / "checkpoint" / "trainer.json").read_text())
    log = older / "metrics" / "steps.jsonl"
    with open(log, "ab") as fh:  # an append cut by a full disk or a crash
        fh.write(b'{"stage": %d, "step": %d, "modality": "synth_b", "lr' % (position["stage"] + 1,
                                                                           position["step"] + 1))
    with caplog.at_level("WARNING"):
        _resume(run)
    assert f"held stage {position['stage'] + 1} step {position['step'] + 1}" in caplog.text
    assert _steps(run) == finished["steps"], "every step exactly once, nothing glued to the torn fragment"
    got = load_tensors(run / "model.safetensors")
    assert all(torch.equal(got[k], finished["weights"][k]) for k in finished["weights"])


def test_a_torn_middle_line_is_refused_naming_the_line(copy) -> None:
    run = copy()
    log = (run / "current").resolve() / "metrics" / "steps.jsonl"
    lines = log.read_bytes().split(b"\n")
    lines[2] = lines[2][: len(lines[2]) // 2]
    log.write_bytes(b"\n".join(lines))
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"steps\.jsonl: line 3 is not valid JSON"):
        _resume(run)
    assert snapshot(run) == before


def test_a_checkpoint_on_a_full_disk_leaves_no_staging_folder(finished: dict[str, Any], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.engine import generations

    real, calls = generations.Generation.write_bytes, {"n": 0}

    def write_bytes(self, rel: str, data: bytes) -> Path:
        calls["n"] += 1
        if calls["n"] == 30:  # inside a later generation's staging folder
            fsync = os.fsync
            os.fsync = _full
            try:
                return real(self, rel, data)
            finally:
                os.fsync = fsync
        return real(self, rel, data)

    monkeypatch.setattr(generations.Generation, "write_bytes", write_bytes)
    run = tmp_path / "full"
    with pytest.raises(CheckpointError, match=r"No space left on device.*medkit run --resume"):
        run_synthetic(run, "sequential", max_steps=4, overrides=OVERRIDES, demo_dir=finished["demo"])
    listing = sorted(p.name for p in (run / "generations").iterdir())
    assert listing == [*_generations(run), "run.json"] and _generations(run), listing
    assert not [p for p in snapshot(run) if p.endswith(".tmp") or ".staging-" in p]


def _full(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_run_written_before_identities_resumes_and_keeps_what_it_cannot_prove(copy, finished: dict[str, Any],
                                                                                 caplog) -> None:
    run = copy()
    (run / "generations" / "run.json").unlink()
    for g in _generations(run):
        (run / "generations" / g / "generation.json").unlink()
    older, newer = _generations(run)
    (run / "current").unlink()
    (run / "current").symlink_to(f"generations/{older}")
    with caplog.at_level("WARNING"):
        _resume(run)
    assert f"kept {newer}, numbered after the committed generation but not provably this run's" in caplog.text
    assert {older, newer} <= set(_generations(run)), "nothing it cannot identify is deleted"
    assert _steps(run) == finished["steps"]
    assert json.loads((run / "current" / "generation.json").read_text())["run"] == \
        json.loads((run / "generations" / "run.json").read_text())["run"]
