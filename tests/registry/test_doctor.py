"""``medkit doctor`` finds a foreign ``medkit``, broken/missing plugins, old timm, CUDA torch without GPU."""

from __future__ import annotations

import pytest

import importlib.metadata as md
from pathlib import Path
from types import SimpleNamespace

import medkit
from medkit.registry.doctor import (
    CPU_TORCH, diagnose, foreign_medkit, plugin_findings, torch_findings, version_findings,
)
from medkit.registry.host import PluginHost
from medkit.registry.known import DEFAULT_PLUGINS

from ..conftest import run_cli

OURS_DIR = Path(medkit.__file__).resolve().parent


def _medkit_lib(root: Path) -> Path:
    """What ``pip install medkit-lib`` leaves: a dist-info whose RECORD lists a top-level medkit."""
    info = root / "medkit_lib-0.4.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: medkit-lib\nVersion: 0.4.0\n")
    (info / "RECORD").write_text("medkit/__init__.py,,\nmedkit/core/text.py,,\n"
                                 "medkit_lib-0.4.0.dist-info/METADATA,,\n")
    (root / "medkit").mkdir()
    (root / "medkit" / "__init__.py").write_text("__version__ = '0.4.0'\n")
    return root


def test_foreign_distribution_installing_medkit_is_a_problem(tmp_path):
    site = _medkit_lib(tmp_path / "site")
    found = foreign_medkit(list(md.distributions(path=[str(site)])), OURS_DIR)
    problems = [f for f in found if f.level == "problem"]
    assert len(problems) == 1 and "medkit-lib 0.4.0" in problems[0].what
    assert "pip uninstall medkit-lib" in problems[0].fix


def test_imported_medkit_without_our_modules_is_a_problem(tmp_path):
    site = _medkit_lib(tmp_path / "site")
    found = foreign_medkit([], site / "medkit")
    assert found[0].level == "problem" and "another project's package" in found[0].what


def test_overwritten_files_of_ours_are_a_problem(tmp_path):
    pkg = tmp_path / "medkit"
    (pkg / "api").mkdir(parents=True)
    (pkg / "__init__.py").write_text("# overwritten by another project\n")
    (pkg / "api" / "hookspecs.py").write_text("")
    info = tmp_path / "medkit-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: medkit\nVersion: 0.1.0\n")
    (info / "RECORD").write_text("medkit/__init__.py,sha256=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,10\n"
                                 "medkit/api/hookspecs.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n")
    found = foreign_medkit(list(md.distributions(path=[str(tmp_path)])), pkg)
    assert [f.level for f in found] == ["problem"] and "medkit/__init__.py" in found[0].what


@pytest.mark.slow
def test_doctor_command_reports_medkit_lib(tmp_path):
    site = tmp_path / "site"
    info = site / "medkit_lib-0.4.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: medkit-lib\nVersion: 0.4.0\n")
    (info / "top_level.txt").write_text("medkit\n")
    import os

    out = run_cli("doctor", env={"PYTHONPATH": f"{os.environ.get('PYTHONPATH', '')}:{site}"})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "problem: distribution medkit-lib 0.4.0 installs its own top-level 'medkit'" in out.stdout
    clean = run_cli("doctor")
    assert "medkit-lib" not in clean.stdout
    assert "ok: timm" in clean.stdout and "torch" in clean.stdout


def test_broken_and_missing_plugins(tmp_path):
    host = SimpleNamespace(records=[SimpleNamespace(dist="medkit-plugin-ct", version="0.1.0", entry_point="ct",
                                                    error="ImportError: No module named 'monai'")],
                           skipped={"medkit-plugin-er": "disabled by MEDKIT_DISABLE_PLUGINS"})
    installed = {d for d in DEFAULT_PLUGINS if d not in ("medkit-plugin-mae", "medkit-plugin-mlm")}
    found = plugin_findings(host, installed)
    assert found[0].level == "problem" and "medkit-plugin-ct" in found[0].what and "monai" in found[0].what
    missing = next(f for f in found if "not installed" in f.what)
    assert "pip install medkit-plugin-mae medkit-plugin-mlm" in missing.fix
    assert any("medkit-plugin-er is installed but disabled by MEDKIT_DISABLE_PLUGINS" in f.what for f in found)


def test_cuda_torch_without_gpu_is_a_note_and_old_timm_a_problem():
    fake = SimpleNamespace(__version__="2.5.0+cu121", version=SimpleNamespace(cuda="12.1"),
                           cuda=SimpleNamespace(is_available=lambda: False))
    [note] = torch_findings(lambda: fake)
    assert note.level == "note" and CPU_TORCH in note.fix
    cpu = SimpleNamespace(__version__="2.5.0+cpu", version=SimpleNamespace(cuda=None),
                          cuda=SimpleNamespace(is_available=lambda: False))
    assert torch_findings(lambda: cpu)[0].level == "ok"
    [old] = version_findings(lambda name: "1.0.9")
    assert old.level == "problem" and "1.0.16" in old.what
    assert version_findings(lambda name: "1.0.16")[0].level == "ok"


def test_this_environment_has_no_problem():
    findings = diagnose(PluginHost())
    assert not [f for f in findings if f.level == "problem"], [f.line() for f in findings]
