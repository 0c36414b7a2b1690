"""Every ``medkit`` command line in README.md and docs/*.md finishes in minutes on a 2-core CPU as
written, or says it does not: each is either run here exactly as written (``AS_WRITTEN``, on the
built-in demo data, each under ``TIME_LIMIT`` seconds), a documented refusal (the doc shows the
``error:`` line it prints; run here, the line checked), or marked ``full size`` in the doc (a ``# full
size ...`` comment on the line, or ``<!-- medkit commands below: full size ... -->`` before its block:
the user's data, the base encoder or a released checkpoint; tests/test_readme_commands.py runs the
README's scaled down).

The commands run in three groups, one per file (this one, test_doc_commands_ct_run.py and
test_doc_commands_data.py), so that pytest-xdist's ``--dist loadfile`` spreads them over its workers."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from .conftest import REPO, run_cli, run_cli_in_process

FULL_SIZE = "full size"
BLOCK_MARK = re.compile(r"^<!-- medkit commands below: full size\b")
#: A command's seconds on a 2-core CPU (each measured well under it on the CI machine).
TIME_LIMIT = 300
#: A setup run only has to exist (with its strategy and config): the smallest encoder, no probes.
TINY = ["--preset", "tiny", "--max-steps", "2", "encoder.depth=1", "encoder.embed_dim=48", "encoder.num_heads=3",
        "trainer.batch_size=4", "trainer.eval_batches=1", "trainer.probe_linear_steps=0", "trainer.probe_knn_k=0"]
#: What a command needs that the docs do not make before it (``medkit compare`` compares runs of
#: three strategies; the docs of ``--resume`` talk about a run ``runs/a``).
SETUP: dict[str, list[list[str]]] = {
    "medkit compare runs/seq runs/rehearsal runs/ewc": [
        ["run", "--modality", "ct", "--strategy", strategy, *TINY, "--run-dir", f"runs/{name}"]
        for name, strategy in (("seq", "sequential"), ("rehearsal", "rehearsal"), ("ewc", "ewc"))],
    "medkit run --resume runs/a encoder.depth=6": [
        ["run", "--modality", "ct", "--strategy", "sequential", *TINY, "--run-dir", "runs/a"]],
}
#: The commands run as written, in the order the pages give them (README first).
AS_WRITTEN = [
    "medkit run --modality report,xray,ct,mri,pathology --strategy rehearsal --preset tiny --max-steps 10",
    "medkit doctor",
    "medkit plugins list",
    "medkit run --modality ct --strategy sequential --preset tiny --max-steps 20 --run-dir runs/ct",
    "medkit run --resume runs/ct",
    "medkit run --config runs/ct/config.yaml --max-steps 5 --run-dir runs/ct-again optim.lr=5e-4",
    "medkit run --modality ct --preset tiny --max-steps 4 --nproc-per-node 2 --run-dir runs/ct-ddp",
    "medkit config show --modality ct --preset tiny",
    "medkit data inspect --modality ct",
    "medkit data preview --modality xray --samples 2 --out runs/preview",
    "medkit run --from runs/ct --modality pathology --strategy rehearsal --max-steps 10 --run-dir runs/ct-path",
    "medkit report runs/ct",
    "medkit compare runs/seq runs/rehearsal runs/ewc",
    "medkit finetune --task classification --scratch --preset tiny --max-steps 20 --run-dir runs/ft-cls",
    "medkit evaluate runs/ft-cls",
    "medkit embed runs/ct --modality ct --modality mri",
    "medkit push runs/ct --repo-id me/medkit-ct --license cc-by-4.0",
    "medkit run --from hf-hub:me/medkit-ct --modality mri --strategy rehearsal --max-steps 10 --run-dir runs/ct-mri",
    "medkit convert medcoss checkpoint-299.pth runs/official",
    "medkit run --config runs/ct/config.yaml --max-steps 2 --run-dir runs/ct-b trainer.batch_size=4",
    "medkit config show --config runs/ct/config.yaml --modality xray",
    "medkit prepare --modality ct --out runs/ct-prepared",
    "medkit run --modality ct --data ct=runs/ct-prepared --preset tiny --max-steps 5 --run-dir runs/ct-shards",
]
#: The commands of AS_WRITTEN that run in the other two files (each group in its own scratch folder, in
#: page order): those that need ``runs/ct``, and compare / convert / prepare with the documented
#: refusals. This file runs the rest (a command added to AS_WRITTEN runs here unless a group names it).
CT_RUN = [
    "medkit run --modality ct --strategy sequential --preset tiny --max-steps 20 --run-dir runs/ct",
    "medkit run --resume runs/ct",
    "medkit run --config runs/ct/config.yaml --max-steps 5 --run-dir runs/ct-again optim.lr=5e-4",
    "medkit run --from runs/ct --modality pathology --strategy rehearsal --max-steps 10 --run-dir runs/ct-path",
    "medkit report runs/ct",
    "medkit embed runs/ct --modality ct --modality mri",
    "medkit push runs/ct --repo-id me/medkit-ct --license cc-by-4.0",
    "medkit run --from hf-hub:me/medkit-ct --modality mri --strategy rehearsal --max-steps 10 --run-dir runs/ct-mri",
    "medkit run --config runs/ct/config.yaml --max-steps 2 --run-dir runs/ct-b trainer.batch_size=4",
    "medkit config show --config runs/ct/config.yaml --modality xray",
]
DATA = [
    "medkit compare runs/seq runs/rehearsal runs/ewc",
    "medkit convert medcoss checkpoint-299.pth runs/official",
    "medkit prepare --modality ct --out runs/ct-prepared",
    "medkit run --modality ct --data ct=runs/ct-prepared --preset tiny --max-steps 5 --run-dir runs/ct-shards",
]
GROUPS: dict[str, list[str]] = {"ct-run": CT_RUN, "data": DATA}
#: Commands that train, write a run, talk to the Hub or look at the environment run as a user runs them,
#: in a new ``medkit`` process. These (they only read configs, runs or demo data) and the documented
#: refusals run the same command line in this process through click's ``CliRunner``: the same code
#: path without the seconds each new process spends importing torch and loading every plugin.
IN_PROCESS = {
    "medkit config show --modality ct --preset tiny",
    "medkit data inspect --modality ct",
    "medkit data preview --modality xray --samples 2 --out runs/preview",
    "medkit report runs/ct",
    "medkit compare runs/seq runs/rehearsal runs/ewc",
    "medkit config show --config runs/ct/config.yaml --modality xray",
}


@dataclass(frozen=True)
class DocCommand:
    """One ``medkit`` command of a page: where, as written, and how the page marks it."""

    page: str
    line: int
    text: str  # the command, normalised (``shlex`` tokens joined by one space)
    full_size: bool
    refusal: str | None  # the ``error:`` line the page shows under it


def _code_lines(text: str) -> list[tuple[int, str, bool, int]]:
    """``(line number, code line, block marked full size, block number)`` of every fenced or indented
    code block."""
    out: list[tuple[int, str, bool, int]] = []
    fenced = marked = False
    block = 0
    for n, line in enumerate(text.splitlines(), 1):
        if BLOCK_MARK.match(line.strip()):
            marked = True
            continue
        if line.lstrip().startswith("```"):
            fenced = not fenced
            block += 1
            if not fenced:
                marked = False
            continue
        if fenced:
            out.append((n, line, marked, block))
        elif line.startswith("    ") and line.strip():
            out.append((n, line.strip(), marked, block))
        elif line.strip() and not line.startswith("<!--"):
            block += 1
            marked = False  # prose ends an indented block (and a marker not followed by a block)
    return out


def doc_commands(pages: list[Path] | None = None) -> list[DocCommand]:
    """Every ``medkit`` command in the code blocks of ``pages`` (README.md and docs/*.md): backslash
    continuations joined, a ``$ `` prompt dropped, ``&&`` / ``;`` chains split."""
    pages = pages or [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found: list[DocCommand] = []
    for page in pages:
        name = f"docs/{page.name}" if page.parent == REPO / "docs" else page.name
        code = _code_lines(page.read_text(encoding="utf-8"))
        i = 0
        while i < len(code):
            n, line, marked, block = code[i]
            while line.rstrip().endswith("\\") and i + 1 < len(code):
                i += 1
                line = line.rstrip()[:-1] + " " + code[i][1].strip()
            nxt = code[i + 1][1].strip() if i + 1 < len(code) and code[i + 1][3] == block else ""
            i += 1
            line = line.strip()
            line = line[2:] if line.startswith("$ ") else line
            if not re.search(r"(^|&&|;)\s*medkit\s", line):
                continue  # not a command line (python, toml, output, or a shell line running no medkit)
            mark = re.search(r"(^|\s)#", line)  # a shell comment (no command here quotes a '#')
            body, comment = (line[:mark.start()], line[mark.end():]) if mark else (line, "")
            full = marked or FULL_SIZE in comment
            tokens = shlex.split(body)
            parts: list[list[str]] = [[]]
            for t in tokens:
                if t in ("&&", ";"):
                    parts.append([])
                else:
                    parts[-1].append(t)
            for argv in parts:
                if argv and argv[0] == "medkit":
                    found.append(DocCommand(name, n, " ".join(argv), full,
                                            nxt if nxt.startswith("error:") and not full else None))
    return found


def test_every_doc_command_is_run_here_or_marked_full_size() -> None:
    commands = doc_commands()
    assert len(commands) > 30, "the parser finds the pages' commands"
    texts = {c.text for c in commands}
    unmarked = [f"{c.page}:{c.line}: {c.text}" for c in commands
                if not c.full_size and c.refusal is None and c.text not in AS_WRITTEN]
    assert not unmarked, ("commands a reader runs as written but no test does; add them to AS_WRITTEN (if they "
                          "finish in minutes on a CPU) or mark them `# full size` with a fast one beside:\n"
                          + "\n".join(unmarked))
    stale = [c for c in AS_WRITTEN if c not in texts]
    assert not stale, f"AS_WRITTEN names commands no page has any more: {stale}"
    assert not [c for c in commands if c.text in AS_WRITTEN and c.full_size], "a run command is not full size"
    grouped = [t for group in GROUPS.values() for t in group]
    assert len(grouped) == len(set(grouped)) and set(grouped) <= set(AS_WRITTEN), \
        "GROUPS names each command of AS_WRITTEN at most once, and nothing else"
    assert not IN_PROCESS - set(AS_WRITTEN) and not [t for t in IN_PROCESS if re.search(r"medkit (run|finetune)\b", t)]


def test_the_parser_sees_markers_chains_and_refusals(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("text\n\n```bash\nmedkit a --x 1  # full size: yours\nmedkit b \\\n  --y 2 ; medkit c\n```\n\n"
                    "<!-- medkit commands below: full size (weights) -->\n\n    medkit d\n    medkit e\n\nprose\n\n"
                    "    medkit f\n\n```\n$ medkit g\nerror: no\n```\n\n```\nmedkit h\n```\n```\nerror: other\n```\n")
    got = {c.text: (c.full_size, c.refusal) for c in doc_commands([page])}
    assert got == {"medkit a --x 1": (True, None), "medkit b --y 2": (False, None), "medkit c": (False, None),
                   "medkit d": (True, None), "medkit e": (True, None), "medkit f": (False, None),
                   "medkit g": (False, "error: no"), "medkit h": (False, None)}


def _prepare(text: str, cwd: Path, env: dict[str, str]) -> None:
    for argv in SETUP.get(text, []):
        if (cwd / argv[-1]).exists():
            continue
        same = [other[-1] for others in SETUP.values() for other in others
                if other[:-1] == argv[:-1] and other is not argv and (cwd / other[-1]).is_dir()]
        if same:  # the same setup run made for another command (runs/seq for runs/a): a copy of it
            shutil.copytree(cwd / same[0], cwd / argv[-1])
            continue
        out = run_cli(*argv, env=env, cwd=cwd, timeout=TIME_LIMIT)
        assert out.returncode == 0, out.stderr[-2000:]
    if text.startswith("medkit convert medcoss") and not (cwd / "checkpoint-299.pth").exists():
        from .interop.test_medcoss_convert import _official_file

        _official_file(cwd / "checkpoint-299.pth")


@contextlib.contextmanager
def fake_hub(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment that points ``medkit push`` and ``hf-hub:`` at a fake Hub (user ``me``) on 127.0.0.1."""
    from .hub.conftest import TOKEN, load_fake_hub

    with load_fake_hub().FakeHub(TOKEN, user="me") as server:
        yield {"HF_ENDPOINT": server.endpoint, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home"),
               "HF_HUB_ETAG_TIMEOUT": "120", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}


def run_as_written(texts: list[str], tmp_path: Path, env: dict[str, str]) -> None:
    """Each command of ``texts``, exactly as the page writes it, in one scratch folder (so later commands
    find the runs earlier ones made); a documented refusal must print the page's ``error:`` line. The
    demo data is the test session's (``MEDKIT_DEMO_DIR``): made once for the groups and other tests."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = {**env, "MEDKIT_DEMO_DIR": os.environ["MEDKIT_DEMO_DIR"], "OMP_NUM_THREADS": "1"}
    refusals = {c.text: c.refusal for c in doc_commands() if c.refusal}
    failures, took = [], {}
    for text in texts:
        _prepare(text, cwd, env)
        start = time.monotonic()
        args = shlex.split(text)[1:]
        if text in IN_PROCESS or text in refusals:
            out = run_cli_in_process(*args, env=env, cwd=cwd)
        else:
            out = run_cli(*args, env=env, cwd=cwd, timeout=TIME_LIMIT)
        took[text] = round(time.monotonic() - start, 1)
        if text in refusals:
            shown = str(refusals[text]).split("...")[0].strip()
            if out.returncode == 0 or shown not in out.stderr:
                failures.append(f"{text}\n  the page shows: {shown}\n  it printed: {out.stderr.strip()[-800:]}")
        elif out.returncode != 0:
            failures.append(f"{text}\n  {out.stderr.strip()[-1500:]}")
    print("\n".join(f"{s:7.1f} s  {t}" for t, s in took.items()))  # shown with -rP: the measured times
    assert not failures, "doc commands that do not do what the page says:\n" + "\n".join(failures)
    slow = {t: s for t, s in took.items() if s > TIME_LIMIT}
    assert not slow, f"doc commands over {TIME_LIMIT} s: {slow}"


def refusal_commands() -> list[str]:
    """The documented refusals (run with the ``data`` group)."""
    return list(dict.fromkeys(c.text for c in doc_commands() if c.refusal))


@pytest.mark.slow
def test_the_doc_commands_run_as_written_in_minutes(tmp_path: Path) -> None:
    """The commands of AS_WRITTEN that no group of GROUPS names (see :func:`run_as_written`)."""
    grouped = {t for group in GROUPS.values() for t in group}
    with fake_hub(tmp_path) as env:
        run_as_written([t for t in AS_WRITTEN if t not in grouped], tmp_path, env)
