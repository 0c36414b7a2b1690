"""Reading run configs back: inert (no ${...} is ever resolved), errors that name the file; resume overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medkit.api.errors import CheckpointError, ConfigError
from medkit.config.overrides import SAFE_RESUME_OVERRIDES, apply_resume_overrides
from medkit.config.yaml import from_yaml, load_run_config, read_config_json, to_yaml

GOOD = "run:\n  strategy: sequential\ntrainer:\n  max_steps: 10\n  batch_size: 4\noptim:\n  lr: 0.001\n  min_lr: 0.0\n"


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def test_round_trip_of_a_composed_config(tmp_path: Path) -> None:
    from medkit.config.compose import Selection, compose
    from medkit.testing.synthetic import use_synthetic_host

    cfg = compose(Selection(modalities=["synth_a", "synth_b"], strategy="sequential", preset="tiny"),
                  host=use_synthetic_host())
    assert load_run_config(_write(tmp_path, to_yaml(cfg))) == cfg


@pytest.mark.parametrize("text, key", [
    ("trainer:\n  device: ${oc.env:HOME}\n", "trainer.device"),
    ("run:\n  data:\n    ct: '${oc.env:MEDKIT_SECRET}/x'\n", "run.data.ct"),
    ("optim:\n  betas: [0.9, '${optim.lr}']\n", "optim.betas[1]"),
    ("modality:\n  ${oc.env:HOME}: 1\n", "modality.${oc.env:HOME}"),
])
def test_interpolations_are_refused_never_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   text: str, key: str) -> None:
    monkeypatch.setenv("MEDKIT_SECRET", "s3cr3t-value")
    run = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_run_config(run)
    message = str(info.value)
    assert str(run / "config.yaml") in message and key in message and "\n" not in message
    assert os.environ["HOME"] not in message.replace(str(tmp_path), "") and "s3cr3t" not in message


@pytest.mark.parametrize("text, words", [
    ("trainer:\n  max_steps: [1,\n  batch_size: 2\n", "not valid YAML at line"),
    ("trainer: {a: 1\n", "not valid YAML"),
    ("- a\n- b\n", "not a mapping"),
    ("just text\n", "not a mapping"),
    ("", "is empty"),
    ("a: &x [1, 2]\nb: *x\n", "aliases"),
    ("a: 1\n---\nb: 2\n", "more than one YAML document"),
    ("a: 1\na: 2\n", "duplicate key a"),
])
def test_malformed_yaml_names_the_file(tmp_path: Path, text: str, words: str) -> None:
    run = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_run_config(run)
    message = str(info.value)
    assert message.startswith(str(run / "config.yaml")) and words in message, message
    assert "<unicode string>" not in message and "\n" not in message


def test_not_a_regular_file_is_refused_before_reading(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config.yaml")  # reading a FIFO would hang forever
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_run_config(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty is not a medkit run directory"):
        load_run_config(tmp_path / "empty")


def test_binary_garbage_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="config.yaml: not UTF-8"):
        load_run_config(tmp_path)


def test_config_json_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"encoder": {"preset": "${oc.env:HOME}"}}')
    with pytest.raises(ConfigError, match=r"config.json: encoder.preset holds the interpolation"):
        read_config_json(tmp_path / "config.json")
    (tmp_path / "config.json").write_text('{"encoder": ')
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        read_config_json(tmp_path / "config.json")


def test_from_yaml_keeps_plain_values() -> None:
    assert from_yaml(GOOD)["optim"]["lr"] == 0.001
    assert from_yaml("a: 'costs $5 {not an interpolation}'\n")["a"].startswith("costs $5")


def test_safe_resume_overrides_are_typed_and_recorded() -> None:
    cfg = from_yaml(GOOD)
    out = apply_resume_overrides(cfg, ["optim.lr=5e-5", "trainer.max_steps=20"], source="r/config.yaml")
    assert out["optim"]["lr"] == 5e-5 and out["trainer"]["max_steps"] == 20
    assert out["run"]["resume_overrides"] == ["optim.lr=5e-05", "trainer.max_steps=20"]
    assert cfg["trainer"]["max_steps"] == 10, "the loaded config is not changed in place"
    again = apply_resume_overrides(out, ["trainer.num_workers=2"], source="r/config.yaml")
    assert again["run"]["resume_overrides"][-1] == "trainer.num_workers=2" and len(again["run"]["resume_overrides"]) == 3
    assert "resume_overrides" not in apply_resume_overrides(cfg, [], source="r/config.yaml")["run"]


@pytest.mark.parametrize("override, words", [
    ("encoder.depth=3", "encoder.depth cannot change on resume"),
    ("strategy.buffer_ratio=0.1", "cannot change on resume"),
    ("trainer.batch_size=2", "trainer.batch_size cannot change on resume"),
    ("trainer.max_steps=abc", "trainer.max_steps expects int, got 'abc'"),
    ("optim.lr=fast", "optim.lr expects float or null, got 'fast'"),
    ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0: must be at least 1"),
    ("optim.lr=${oc.env:HOME}", "literal value"),
])
def test_unsafe_or_wrong_resume_overrides_are_refused(override: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_resume_overrides(from_yaml(GOOD), [override], source="r/config.yaml")
    assert words in str(info.value) and "\n" not in str(info.value)
    if "cannot change" in words:
        assert all(k in str(info.value) for k in SAFE_RESUME_OVERRIDES)


def test_a_loaded_config_of_the_wrong_type_is_refused_on_resume() -> None:
    with pytest.raises(ConfigError, match=r"r/config.yaml: trainer.max_steps expects int, got 'abc'"):
        apply_resume_overrides(from_yaml("trainer:\n  max_steps: abc\n"), [], source="r/config.yaml")
