"""A crafted config in a run directory or a downloaded repo is never resolved: push refuses it (nothing is
uploaded, no secret leaves), and so do the readers of a checkpoint's config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medkit.api.errors import ConfigError

SECRET = "medkit-test-secret-7c1d"
#: huggingface_hub's LFS upload passes a file object as ``data=`` (httpx2 deprecation, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def _plant(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_push_refuses_an_interpolation_and_uploads_nothing(hub: Any, run_copy: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.hub.push import push
    from medkit.registry import get_host

    monkeypatch.setenv("MEDKIT_TEST_SECRET", SECRET)
    _plant(run_copy / "config.yaml", "device: auto", "device: ${oc.env:MEDKIT_TEST_SECRET}")
    with pytest.raises(ConfigError) as info:
        push(run_copy, "alice/crafted", components=get_host())
    message = str(info.value)
    assert str(run_copy / "config.yaml") in message and "trainer.device" in message and SECRET not in message
    assert not hub.repos and not hub.blobs, "refused before any repository or file reached the Hub"
    assert not [r for r in hub.requests if r[0] in ("POST", "PUT")], hub.requests  # (a token check may GET)


def test_push_names_the_file_of_a_malformed_config(hub: Any, run_copy: Path) -> None:
    from medkit.hub.push import push
    from medkit.registry import get_host

    _plant(run_copy / "config.yaml", "trainer:", "trainer: {")
    with pytest.raises(ConfigError, match=r"config.yaml: not valid YAML at line \d+"):
        push(run_copy, "alice/broken", components=get_host())


def test_a_checkpoint_config_json_with_an_interpolation_is_refused(run_copy: Path) -> None:
    from medkit.hub.hub import read_architecture

    arch = json.loads((run_copy / "config.json").read_text())
    arch["encoder"]["preset"] = "${oc.env:HOME}"
    (run_copy / "config.json").write_text(json.dumps(arch))
    with pytest.raises(ConfigError, match=r"config.json: encoder.preset holds the interpolation"):
        read_architecture(run_copy)
