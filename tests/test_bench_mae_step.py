"""bench/mae_step.py --reference-repo: a folder that is not the authors' code is refused in one line,
and a checkout's model and scaler are imported from that folder, never from elsewhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from medcoss_reference import REQUIRED, ReferenceRepoError, check_repo, load_reference  # noqa: E402  (bench/)

from medkit.api.errors import MedkitError  # noqa: E402


def _fake_checkout(root: Path, skip: str | None = None, alter: str | None = None) -> Path:
    """A folder with the files :data:`REQUIRED` names, each with its defining line (``skip``: one file
    left out; ``alter``: one file without its defining line)."""
    for rel, needle in REQUIRED.items():
        if rel == skip:
            continue
        file = root / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("# not theirs\n" if rel == alter else f"{needle}object):\n    pass\n", encoding="utf-8")
    return root


def _refusal(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "mae_step.py"), "--cases", "2d", "--modes", "fp32",
                           "--reference-repo", str(repo), "--out", str(repo.parent / "out.json")],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("kind", ["missing folder", "empty folder", "a file missing", "not their class"])
def test_the_bench_refuses_a_folder_that_is_not_the_authors_code_in_one_line(tmp_path: Path, kind: str) -> None:
    repo = tmp_path / "repo"
    if kind == "empty folder":
        repo.mkdir()
    elif kind == "a file missing":
        _fake_checkout(repo, skip="util/misc.py")
    elif kind == "not their class":
        _fake_checkout(repo, alter="model/Unimodel.py")
    proc = _refusal(repo)
    assert proc.returncode == 2, (proc.stdout, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --reference-repo {repo}"), proc.stderr
    expected = {"missing folder": "not a folder", "empty folder": "no model/Unimodel.py",
                "a file missing": "no util/misc.py", "not their class": "has no 'class Unified_Model'"}[kind]
    assert expected in lines[0] and "github.com/yeerwen/MedCoSS" in lines[0]
    assert not (tmp_path / "out.json").exists() and "s/step" not in proc.stdout  # nothing was timed


def test_check_repo_accepts_a_checkout_and_its_error_is_a_medkit_error(tmp_path: Path) -> None:
    assert check_repo(_fake_checkout(tmp_path / "ok")) == (tmp_path / "ok").resolve()
    with pytest.raises(ReferenceRepoError) as err:
        check_repo(_fake_checkout(tmp_path / "bad", alter="main_pretrain_single_modal.py"))
    assert isinstance(err.value, MedkitError) and "main_pretrain_single_modal.py" in str(err.value)


def test_the_reference_is_imported_from_the_given_folder_only(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Same-named modules imported before (``model``, ``util``) are not reused; the folder leaves
    ``sys.path`` afterwards; the scaler comes from the checkout's ``util/misc.py``."""
    repo = _fake_checkout(tmp_path / "repo")
    (repo / "model" / "Unimodel.py").write_text(
        "from model.Base_module import VideoBaseEmbedding\n\nclass Unified_Model(VideoBaseEmbedding):\n    pass\n")
    (repo / "model" / "Base_module.py").write_text("class VideoBaseEmbedding(object):\n    origin = 'fake'\n")
    (repo / "util" / "misc.py").write_text(
        "from torch._six import inf\n\nclass NativeScalerWithGradNormCount:\n    limit = inf\n")
    names = ("model", "model.Unimodel", "model.Base_module", "util", "util.misc", "torch._six", "transformers",
             "transformers.models", "transformers.models.bert", "transformers.models.bert.modeling_bert")
    for name in names:  # every module the import adds is gone after the test (shims included)
        monkeypatch.setitem(sys.modules, name, None)
        del sys.modules[name]
    stale = type(sys)("model.Unimodel")
    sys.modules["model.Unimodel"] = stale  # someone else's module of that name
    model_cls, scaler_cls, shims = load_reference(repo)
    assert model_cls.origin == "fake" and scaler_cls.limit == float("inf")
    assert sys.modules["model.Unimodel"] is not stale
    assert str(repo.resolve()) not in sys.path
    assert "torch._six" in shims  # removed from torch in 2.0; their util/misc.py imports it
