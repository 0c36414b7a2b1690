"""The one gate for received files (``medkit.config.received``): what ``push`` publishes is re-emitted
from the typed schema, ``--from`` never reads a received manifest's data paths, instantiation keys and
YAML tags are refused with the file and the key path, and a read-only run is named by ``report``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from medkit.api.errors import ConfigError, MedkitError

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.mark.parametrize("key", ["_target_", "_args_", "_partial_", "_convert_", "_recursive_"])
def test_every_instantiation_key_is_refused_with_its_path(key: str) -> None:
    from medkit.config.yaml import from_yaml

    with pytest.raises(ConfigError, match=rf"^f\.yaml: trainer\.lists\[1\]\.{key} is a {key} key"):
        from_yaml(f"trainer:\n  lists:\n  - 1\n  - {key}: x\n", "f.yaml")


@pytest.mark.parametrize("text, where", [
    ("a: !!python/object/apply:os.system [id]\n", "a"),
    ("a:\n  b: [1, !!str 2]\n", r"a\.b\[1\]"),
    ("a: !custom {x: 1}\n", "a"),
    ("? !!python/name:os.system\n: 1\n", "the document"),
])
def test_yaml_tags_are_refused_with_their_key_path(text: str, where: str) -> None:
    from medkit.config.yaml import from_yaml

    with pytest.raises(ConfigError, match=rf"^f\.yaml: {where} carries the YAML tag"):
        from_yaml(text, "f.yaml")


def test_a_received_manifest_of_the_wrong_types_is_one_line(tmp_path: Path) -> None:
    from medkit.config.received import received_manifest

    for doc, where in [("x", "the document"), ({"current": "x"}, "current"),
                       ({"stages": [{"modalities": "ct"}]}, r"stages\[0\]\.modalities"),
                       ({"data": {"ct": 3}}, r"data\.ct"), ({"finished": "yes"}, "finished")]:
        (tmp_path / "manifest.json").write_text(json.dumps(doc))
        with pytest.raises(MedkitError, match=rf"manifest\.json: {where} must be"):
            received_manifest(tmp_path / "manifest.json")


def test_from_never_reads_the_data_folders_a_received_manifest_names(report_run: Path, tmp_path: Path) -> None:
    from medkit.config.compose import Selection
    from medkit.engine.continuation import compose_continuation
    from medkit.registry import get_host

    run = Path(shutil.copytree(report_run, tmp_path / "run", symlinks=True))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["data"] = {"report": "/etc"}
    (run / "manifest.json").unlink()
    (run / "manifest.json").write_text(json.dumps(manifest))
    cfg = compose_continuation(str(run), run, Selection(modalities=["xray"], strategy="sequential", preset="tiny"),
                               host=get_host())
    assert cfg["run"]["data"].get("report") is None, cfg["run"]["data"]
    assert "/etc" not in json.dumps(cfg)
    given = compose_continuation(str(run), run, Selection(modalities=["xray"], strategy="sequential", preset="tiny",
                                                          data={"report": str(tmp_path)}), host=get_host())
    assert given["run"]["data"]["report"] == str(tmp_path), "a folder the user names is used"


def test_push_publishes_what_the_schema_knows_never_the_received_bytes(hub: Any, run_copy: Path) -> None:
    from medkit.hub.push import push
    from medkit.registry import get_host

    text = (run_copy / "config.yaml").read_text()
    text = text.replace("trainer:\n", "trainer:\n  crafted_trainer_key: 1\n", 1)
    text = text.replace("run:\n", "run:\n  crafted_run_note: hello\n", 1)
    (run_copy / "config.yaml").write_text(text + "crafted_section:\n  shell: rm -rf ~\n")
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["crafted_field"] = "published as is"
    manifest["stages"][0]["crafted_stage_field"] = 1
    (run_copy / "manifest.json").unlink()
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    push(run_copy, "alice/reemitted", components=get_host())
    remote = hub.files("alice/reemitted")
    published = remote["config.yaml"].decode()
    assert "crafted" not in published and "rm -rf" not in published, published
    assert "crafted" not in remote["manifest.json"].decode()
    cfg = yaml.safe_load(published)
    assert set(cfg) <= {"run", "encoder", "optim", "trainer", "strategy", "modality", "tokenizer", "objective"}
    assert cfg["trainer"]["max_steps"] == 2, "known keys keep their values"


def test_push_refuses_a_received_target_and_uploads_nothing(hub: Any, run_copy: Path) -> None:
    from medkit.hub.push import push
    from medkit.registry import get_host

    text = (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text(text.replace("trainer:\n", "trainer:\n  _target_: os.system\n"
                                                                     "  _args_: ['touch /tmp/x']\n", 1))
    with pytest.raises(ConfigError, match=r"config\.yaml: trainer\._target_ is a _target_ key"):
        push(run_copy, "alice/crafted-target", components=get_host())
    assert not hub.repos and not hub.blobs


def _immutable(path: Path, on: bool) -> bool:
    """``chattr +i``/``-i`` (root ignores file modes, not the immutable flag); False where unsupported."""
    try:
        return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True, check=False,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_report_on_a_read_only_run_names_the_directory(report_run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from medkit.cli.main import cli

    run = Path(shutil.copytree(report_run, tmp_path / "run", symlinks=True))
    shutil.rmtree(run / "report", ignore_errors=True)
    if not _immutable(run, True):
        run.chmod(0o555)
        try:
            (run / ".probe").touch()
        except OSError:
            pass  # read-only now
        else:
            (run / ".probe").unlink()
            run.chmod(0o755)
            pytest.skip("cannot make a directory read-only here (root without chattr)")
    try:
        result = CliRunner().invoke(cli, ["report", str(run)])
    finally:
        _immutable(run, False)
        run.chmod(0o755)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(run) in errors[0] and "not writable" in errors[0], result.output
    assert "OSError" not in errors[0] and "PermissionError" not in errors[0]


def test_data_inspect_names_the_plugin_of_an_import_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata as md

    from click.testing import CliRunner
    from medkit.cli.main import cli
    from medkit.registry import reset_host
    from medkit.registry.host import PluginHost

    (tmp_path / "medkit_brokenmod_plugin.py").write_text(
        "from medkit.api import ModalitySpec, hookimpl\n"
        "MEDKIT_API_VERSION = 1\n"
        "@hookimpl\n"
        "def medkit_register_modalities(register):\n"
        "    register(ModalitySpec('brokenmod', 'medkit_brokenmod_missing_dependency:Modality',\n"
        "             meta={'dims': 2, 'default_tokenizer': 'patch_2d', 'default_objective': 'mae'}))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = list(md.entry_points(group="medkit"))
    eps.append(md.EntryPoint(name="brokenmod", value="medkit_brokenmod_plugin", group="medkit"))
    reset_host(PluginHost(eps))
    try:
        result = CliRunner().invoke(cli, ["data", "inspect", "--modality", "brokenmod", "--data", str(tmp_path)])
    finally:
        reset_host()
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "brokenmod" in errors[0] and "medkit_brokenmod_missing_dependency" in errors[0], errors[0]
    assert not errors[0].startswith("error: ModuleNotFoundError"), errors[0]
