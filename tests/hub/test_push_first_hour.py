"""``medkit push`` as a first-time user meets it: the token is checked before any work, and the
command says "pushed" once."""

from __future__ import annotations

from medkit.registry import get_host

from pathlib import Path
from typing import Any

import pytest

from medkit.api.errors import CheckpointError, ConfigError


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) the slow steps of a push: rebuilding the model and preparing the files."""
    import medkit.hub.push as hub_module

    called: list[str] = []

    def refuse(name: str) -> Any:
        def fn(*args: Any, **kwargs: Any) -> Any:
            called.append(name)
            raise AssertionError(f"{name} ran before the token was checked")
        return fn

    monkeypatch.setattr(hub_module, "load_pretrained", refuse("load_pretrained"))
    monkeypatch.setattr(hub_module, "prepare_push", refuse("prepare_push"))
    return called


def test_a_refused_token_fails_before_any_work(hub: Any, synthetic_run: Path, no_work: list[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.hub.push import push

    monkeypatch.setenv("HF_TOKEN", "hf_notTheRightToken000000000000000000000")
    with pytest.raises(CheckpointError, match="whoami") as err:
        push(synthetic_run, "alice/wrong-token", components=get_host())
    assert "HF_TOKEN" in str(err.value) and "hf_notTheRightToken" not in str(err.value)
    assert no_work == [] and "alice/wrong-token" not in hub.repos


def test_no_token_fails_before_any_work(hub: Any, synthetic_run: Path, no_work: list[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.hub.push import push

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        push(synthetic_run, "alice/no-token", components=get_host())
    assert no_work == []


def test_cli_push_says_pushed_once(hub: Any, synthetic_run: Path) -> None:
    from click.testing import CliRunner

    from medkit.cli.main import cli

    res = CliRunner().invoke(cli, ["push", str(synthetic_run), "--repo-id", "alice/once"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines() + res.stderr.splitlines()
    assert sum("pushed" in line.lower() for line in lines) == 1, res.output
    assert res.stdout.startswith("pushed 10 files") or "pushed " in res.stdout.splitlines()[0], res.stdout
