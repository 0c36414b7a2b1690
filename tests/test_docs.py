"""The docs a newcomer reads are whole: every page is linked from the README, the paths they name exist,
and nothing in the repository points at files outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# written in two pieces so that this file does not match itself
OUTSIDE = ("../" + "shared", "spec " + "§", "medcoss-" + "spec", "/work/" + "shared")
# a repository path in backticks or a link: tests/..., core/..., docs/... ending in a file suffix
NAMED_PATH = re.compile(r"(?<![\w./-])((?:tests|core|registry|cli|plugins|docs|bench)/[\w./-]+\.(?:py|md|toml))")


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # not a git checkout (an sdist): every file below the root
        return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [ROOT / line for line in out.stdout.splitlines() if line]


def _markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("plugins/*/README.md"))]


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages, "docs/ holds no page"
    assert pages <= linked, f"docs pages no README link leads to: {sorted(pages - linked)}"
    assert linked <= pages, f"README links to docs pages that do not exist: {sorted(linked - pages)}"


def test_no_file_points_outside_the_repository() -> None:
    found = []
    for path in _tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable: not prose or code
        for n, line in enumerate(text.splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}" for word in OUTSIDE if word in line]
    assert not found, "references to files outside the repository (write the fact in the docs' own words):\n" + \
        "\n".join(found)


def test_paths_the_docs_name_exist() -> None:
    missing = []
    for page in _markdown_pages():
        base = page.parent
        for name in NAMED_PATH.findall(page.read_text(encoding="utf-8")):
            # a plugin's own path (``tests/test_contract.py`` of the plugin being written) counts too
            if not ((ROOT / name).exists() or (base / name).exists() or any(ROOT.glob(f"plugins/*/{name}"))):
                missing.append(f"{page.relative_to(ROOT)} names {name}")
    assert not missing, "\n".join(missing)
