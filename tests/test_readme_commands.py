"""Every command in README.md's ``bash`` blocks, extracted from the README itself (so the two cannot
drift) and run at the tiny preset: the ``medkit`` commands in a scratch folder (push/pull against
the fake Hub of tests/hub), the checkout install in a fresh virtualenv. Only commands that need the
network (PyPI, the PyTorch wheel index) or that are this very suite are skipped, each for a reason
said here."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, run_cli

SMALL = ["encoder.depth=1", "encoder.embed_dim=48", "encoder.num_heads=3"]
QUICK = ["trainer.batch_size=4", "trainer.eval_batches=1", "trainer.probe_linear_steps=0",
         "trainer.probe_knn_k=0"]
#: README commands that are not run, and why (matched on the joined command line).
SKIPPED = {
    "pip install -U pip": "needs the network (PyPI)",
    "pip install -r requirements-dev.txt": "the developer install this suite runs in (.ci/run runs it)",
    'pip install "medkit[all]"': "needs PyPI; the same requirement set is installed from the checkout below",
    "pip install torch --index-url": "needs the PyTorch wheel index (network)",
    "python -m pytest": "this test suite itself",
}
VENV_STEPS = ("python3 -m venv", ". .venv/bin/activate")


def readme_commands(text: str | None = None) -> list[list[str]]:
    """The commands of README.md's ``bash`` blocks, each as argv (continuations joined, comments
    dropped, ``&&`` and ``;`` chains split)."""
    text = (REPO / "README.md").read_text(encoding="utf-8") if text is None else text
    out: list[list[str]] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            argv: list[str] = []
            for token in shlex.split(line, comments=True) + ["&&"]:
                if token in ("&&", ";"):
                    if argv:
                        out.append(argv)
                    argv = []
                else:
                    argv.append(token)
    return out


def joined(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) if a != ".[all]" else '".[all]"' for a in argv)


def skip_reason(argv: list[str]) -> str | None:
    line = " ".join(argv).replace("medkit[all]", '"medkit[all]"')
    for prefix, reason in SKIPPED.items():
        if line.startswith(prefix):
            return reason
    return None


def test_readme_commands_are_extracted():
    """The parser sees the README as a shell would (and every command is handled below)."""
    commands = readme_commands()
    medkit = [c for c in commands if c[0] == "medkit"]
    assert ["medkit", "plugins", "list"] in medkit and ["medkit", "doctor"] in medkit
    assert any(c[:3] == ["medkit", "run", "--modality"] and "optim.lr=1e-4" in c for c in medkit), \
        "a continued (backslash) line is joined"
    assert ["medkit", "evaluate", "runs/ft-cls"] in medkit, "a ';' chain is split"
    for argv in commands:
        handled = (argv[0] == "medkit" or skip_reason(argv) is not None or is_checkout_install(argv)
                   or " ".join(argv).startswith(VENV_STEPS))
        assert handled, f"README command not exercised by this test: {' '.join(argv)}"


# -- the install from a checkout, in a fresh virtualenv -------------------------------------------
def is_checkout_install(argv: list[str]) -> bool:
    return argv[:2] == ["pip", "install"] and ".[all]" in argv


def _fresh_venv(root: Path) -> Path:
    """A virtualenv whose third-party packages are this environment's (linked, so nothing is
    downloaded) but which holds no medkit distribution at all."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    deps = root / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if name.startswith(("medkit", "__editable__", "_medkit", "__pycache__")) or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(str(deps) + "\n")
    return python


def _checkout(root: Path) -> Path:
    """A copy of what a clone holds (the build leaves egg-info/build folders in it, not in REPO)."""
    dst = root / "checkout"
    dst.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    for name in ("core", "registry", "cli", "plugins"):
        shutil.copytree(REPO / name, dst / name, ignore=ignore)
    return dst


def _venv_env(python: Path, demo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDKIT_LOAD_PLUGINS",
                                                            "MEDKIT_DISABLE_PLUGINS")}
    env.update(PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}", MEDKIT_DEMO_DIR=str(demo),
               OMP_NUM_THREADS="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.mark.slow
def test_checkout_install_in_a_fresh_venv_runs_pathology(tmp_path):
    """README's `pip install ".[all]" ./plugins/medkit-plugin-*` (offline: the dependencies are
    already there) gives a working `medkit run --modality pathology`; with only medkit and the
    pathology plugin, one error names every missing distribution."""
    python = _fresh_venv(tmp_path)
    checkout = _checkout(tmp_path)
    env = _venv_env(python, tmp_path / "demo")
    installs = [c for c in readme_commands() if is_checkout_install(c)]
    assert installs, "README shows the install from a checkout"
    argv = installs[0]
    expanded = [p for a in argv[2:] for p in (sorted(glob.glob(str(checkout / a))) if "*" in a else [a])]
    assert len(expanded) > 10, expanded
    out = subprocess.run([str(python), "-m", "pip", "install", "--no-build-isolation", "--no-index", *expanded],
                         cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    medkit = str(python.parent / "medkit")
    where = subprocess.run([str(python), "-c", "import medkit; print(medkit.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "venv") in where, "the venv's own medkit, not the checkout's source"
    run = subprocess.run([medkit, "run", "--modality", "pathology", "--preset", "tiny", "--max-steps", "2",
                          "--run-dir", str(tmp_path / "run"), *SMALL, *QUICK], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "run" / "tensorboard").is_dir(), "the default set includes the TensorBoard plugin"
    doctor = subprocess.run([medkit, "doctor"], env=env, capture_output=True, text=True, timeout=300)
    assert doctor.returncode == 0 and "not installed" not in doctor.stdout, doctor.stdout

    only = {**env, "MEDKIT_LOAD_PLUGINS": "medkit-plugin-pathology"}
    refused = subprocess.run([medkit, "run", "--modality", "pathology", "--preset", "tiny", "--max-steps", "1",
                              "--run-dir", str(tmp_path / "r2")], env=only, capture_output=True, text=True)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 1 and len(errors) == 1, refused.stderr
    assert "medkit-plugin-tokenizers: not selected by MEDKIT_LOAD_PLUGINS" in errors[0]
    assert "medkit-plugin-mae: not selected by MEDKIT_LOAD_PLUGINS" in errors[0]

    gone = subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "medkit-plugin-tokenizers",
                           "medkit-plugin-mae"], env=env, capture_output=True, text=True)
    assert gone.returncode == 0, gone.stderr
    missing = subprocess.run([medkit, "run", "--modality", "pathology", "--preset", "tiny", "--max-steps", "1",
                              "--run-dir", str(tmp_path / "r3")], env=env, capture_output=True, text=True)
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert missing.returncode == 1 and len(errors) == 1, missing.stderr
    assert "medkit-plugin-tokenizers: not installed" in errors[0] and "medkit-plugin-mae: not installed" in errors[0]
    assert "pip install medkit-plugin-tokenizers medkit-plugin-mae" in errors[0]
    doctor = subprocess.run([medkit, "doctor"], env=env, capture_output=True, text=True, timeout=300)
    assert "pip install medkit-plugin-tokenizers medkit-plugin-mae" in doctor.stdout, doctor.stdout


# -- every medkit command ------------------------------------------------------------------------
class Adapter:
    """Rewrites one README command for a scratch folder: demo data for /data/... placeholders, two
    steps, the tiny preset, small encoders, a run directory; prepares what a command refers to."""

    def __init__(self, cwd: Path, demo: Path) -> None:
        self.cwd, self.demo, self.count = cwd, demo, 0

    def data(self, placeholder: str) -> str:
        from medkit.registry import create

        kind = {"/data/ct": ("modality", "ct"), "/data/cxr": ("modality", "xray"),
                "/data/reports": ("modality", "report"), "/data/Task03_Liver": ("task", "segmentation")}
        if placeholder not in kind:
            raise AssertionError(f"README placeholder {placeholder!r} has no stand-in in this test")
        k, name = kind[placeholder]
        if k == "modality":
            return str(create("modality", name).demo_data(self.demo / name))
        task = create("task", name, dims=3, modality="ct")
        return str(task.demo_data(self.demo / "seg"))

    def stand_in(self, arg: str) -> str:
        """``/data/X`` and ``MODALITY=/data/X`` point at demo data instead."""
        key, sep, value = arg.partition("=")
        if sep and value.startswith("/data/"):
            return f"{key}={self.data(value)}"
        return self.data(arg) if arg.startswith("/data/") else arg

    def __call__(self, argv: list[str]) -> list[str]:
        argv = [a for a in argv[1:] if a != "..."]
        argv = [self.stand_in(a) for a in argv]
        cmd = argv[0]
        if cmd == "run" and "--resume" not in argv:
            argv = _set(argv, "--max-steps", "2")
            if "--from" not in argv:
                argv = _set(argv, "--preset", "tiny") + SMALL
            if "--run-dir" not in argv:
                self.count += 1
                argv = _set(argv, "--run-dir", f"runs/readme-{self.count}")
            argv += QUICK
        elif cmd == "finetune":
            argv = _set(argv, "--max-steps", "2") + ["trainer.val_every=1", "trainer.batch_size=2"]
            if "--scratch" in argv:
                argv = _set(argv, "--preset", "tiny")
            if "--recipe" in argv:  # the recipe's crop is for a GPU; a small crop, same code path
                argv += ["task.patch_size=[16,32,32]"]
            if "--run-dir" not in argv:
                argv = _set(argv, "--run-dir", "runs/finetune-x" if not (self.cwd / "runs/finetune-x").exists()
                            else f"runs/finetune-{len(list((self.cwd / 'runs').glob('finetune-*')))}")
        elif cmd == "embed":
            argv = _set(argv, "--max-samples", "8") + ["--method", "pca"]
        elif cmd == "tokenizer":
            argv = _set(argv, "--vocab-size", "300") + ["--out", "runs/tokenizer"]
        elif cmd == "compare":
            for ref in argv[1:]:
                if not (self.cwd / ref).exists():
                    strategy = {"seq": "sequential"}.get(Path(ref).name, Path(ref).name)
                    prep = run_cli("run", "--modality", "ct", "--strategy", strategy, "--preset", "tiny",
                                   "--max-steps", "2", "--run-dir", ref, *SMALL, *QUICK, cwd=self.cwd)
                    assert prep.returncode == 0, prep.stderr[-2000:]
        elif cmd == "convert":
            ckpt = next(a for a in argv if a.endswith(".pth"))
            if not (self.cwd / ckpt).exists():
                from .interop.test_medcoss_convert import _official_file

                _official_file(self.cwd / ckpt)
        return argv


def _set(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with ``option value`` (replaced where given, else added at the end)."""
    if option in argv:
        i = argv.index(option)
        return argv[:i + 1] + [value] + argv[i + 2:]
    return argv + [option, value]


@pytest.fixture
def fake_hub_env(tmp_path: Path) -> Any:
    from .hub.conftest import TOKEN, load_fake_hub

    with load_fake_hub().FakeHub(TOKEN, user="me") as server:
        yield {"HF_ENDPOINT": server.endpoint, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home"),
               "HF_HUB_ETAG_TIMEOUT": "120", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_DISABLE_XET": "1"}  # the fake Hub speaks LFS, not Xet


def _needed(argv: list[str], commands: list[list[str]]) -> bool:
    """Whether a later full-size command refers to the run directory ``argv`` makes."""
    if "--run-dir" not in argv:
        return False
    made = argv[argv.index("--run-dir") + 1]
    return any(made in c for c in commands if c is not argv)


@pytest.mark.slow
def test_every_medkit_command_of_the_readme_runs(tmp_path, fake_hub_env):
    """The README's full-size commands, scaled down (tests/test_doc_commands.py runs the others as
    written), with the runs they refer to made first."""
    from .test_doc_commands import AS_WRITTEN

    cwd = tmp_path / "work"
    cwd.mkdir()
    adapt = Adapter(cwd, tmp_path / "demo")
    env = {**fake_hub_env, "MEDKIT_DEMO_DIR": str(tmp_path / "demo"), "OMP_NUM_THREADS": "1"}
    failures = []
    ran = 0
    medkit = [c for c in readme_commands() if c[0] == "medkit"]
    full = [c for c in medkit if " ".join(c) not in AS_WRITTEN]
    for argv in medkit:
        if " ".join(argv) in AS_WRITTEN and not _needed(argv, full):
            continue
        args = adapt(argv)
        out = run_cli(*args, env=env, cwd=cwd, timeout=900)
        ran += 1
        if out.returncode != 0:
            failures.append(f"{' '.join(argv)}\n  ran as: medkit {' '.join(args)}\n  "
                            f"{out.stderr.strip()[-1500:]}")
    assert ran >= 5
    assert not failures, "README commands that fail:\n" + "\n".join(failures)
