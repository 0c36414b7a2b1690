"""``medkit doctor``: what is wrong with this environment (a foreign ``medkit``, broken or missing
plugins, a CUDA torch without a GPU, an old timm), and what to do about each."""

from __future__ import annotations

import hashlib
import base64
import importlib.metadata as md
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from medkit.registry.known import ALL_INSTALL, DEFAULT_PLUGINS

OURS = "medkit"
#: a file only this project's ``medkit`` package has (another project's ``medkit`` lacks it)
MARKER = "api/hookspecs.py"
TIMM_MIN = (1, 0, 16)
CPU_TORCH = "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Finding:
    """One line of the diagnosis: ``level`` is ``ok``, ``note`` (worth knowing) or ``problem``."""

    level: str
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.level}: {self.what}" + (f" — {self.fix}" if self.fix else "")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text.split("+")[0])[:3])


def _owns_medkit(dist: md.Distribution) -> bool:
    """Whether ``dist`` installs files of a top-level ``medkit`` package."""
    top = dist.read_text("top_level.txt")
    if top and "medkit" in top.split():
        return True
    return any(f.parts[:1] == ("medkit",) for f in (dist.files or []))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def foreign_medkit(distributions: Iterable[md.Distribution], package_dir: Path | None) -> list[Finding]:
    """A ``medkit`` package that is not this project's: another distribution (``medkit-lib`` on
    PyPI is one) installing a top-level ``medkit``, files of ours it overwrote, or an imported
    ``medkit`` without this project's modules."""
    out: list[Finding] = []
    ours: md.Distribution | None = None
    for dist in distributions:
        name = _norm(dist.metadata["Name"] or "")
        if name == OURS:
            ours = ours or dist
        elif _owns_medkit(dist):
            out.append(Finding("problem", f"distribution {dist.metadata['Name']} {dist.version} installs its own "
                               f"top-level 'medkit' package, which clashes with this medkit (same import name, "
                               f"same folder)", f"pip uninstall {dist.metadata['Name']}, then reinstall this "
                               f"medkit: pip install --force-reinstall --no-deps medkit (from a checkout: "
                               f"pip install --force-reinstall --no-deps .)"))
    if package_dir is not None and not (package_dir / MARKER).exists():
        out.append(Finding("problem", f"the 'medkit' imported from {package_dir} is another project's package "
                           f"(it has no medkit/{MARKER})", "pip uninstall medkit-lib (or whichever "
                           "distribution installed it), then reinstall this medkit"))
        return out
    if ours is None:
        where = f" from {package_dir}" if package_dir else ""
        out.append(Finding("note", f"medkit runs{where} without an installed 'medkit' distribution: plugins and "
                           f"the medkit command need one", "pip install . (from a checkout) or " + ALL_INSTALL))
        return out
    if package_dir is not None:
        direct = ours.read_text("direct_url.json")
        info = json.loads(direct) if direct else {}
        if info.get("dir_info", {}).get("editable"):
            root = Path(str(info.get("url", "")).removeprefix("file://"))
            if root != Path() and root not in package_dir.resolve().parents:
                out.append(Finding("note", f"medkit is imported from {package_dir}, but the installed (editable) "
                                   f"medkit points at {root} (PYTHONPATH or the working directory wins)"))
        else:
            changed = []
            for f in ours.files or []:
                if f.parts[:1] == ("medkit",) and f.hash is not None and f.name.endswith(".py"):
                    path = Path(str(ours.locate_file(f)))
                    if path.exists() and f"{f.hash.mode}={f.hash.value}" != _sha256(path):
                        changed.append(str(f))
            if changed:
                out.append(Finding("problem", f"{len(changed)} file(s) of the installed medkit were overwritten "
                                   f"(e.g. {changed[0]}): another distribution wrote into the same 'medkit' folder",
                                   "uninstall it, then pip install --force-reinstall --no-deps medkit"))
    if not out:
        out.append(Finding("ok", f"medkit {ours.version} is this project's package ({package_dir})"))
    return out


def plugin_findings(host: Any, installed: set[str]) -> list[Finding]:
    """Broken plugins, and built-in plugins that are missing (not installed, disabled, not selected)."""
    out: list[Finding] = []
    for record in host.records:
        if record.error:
            out.append(Finding("problem", f"plugin {record.dist} {record.version} ({record.entry_point}) is broken: "
                               f"{record.error}", "reinstall or upgrade it, or set "
                               f"MEDKIT_DISABLE_PLUGINS={record.dist}"))
    missing = [d for d in DEFAULT_PLUGINS if _norm(d) not in installed]
    if missing:
        out.append(Finding("note", f"{len(missing)} built-in plugin(s) not installed: {', '.join(missing)}",
                           f"pip install {' '.join(missing)} (or {ALL_INSTALL})"))
    for dist in DEFAULT_PLUGINS:
        reason = host.skipped.get(dist)
        if reason and _norm(dist) in installed:
            out.append(Finding("note", f"{dist} is installed but {reason}"))
    if not any(f.level == "problem" for f in out):
        ok = [r for r in host.records if not r.error]
        out.append(Finding("ok", f"{len(ok)} plugin(s) loaded, none broken"))
    return out


def torch_findings(import_torch: Callable[[], Any] | None = None) -> list[Finding]:
    """torch importable; a CUDA build on a machine without a usable GPU is worth a note."""
    try:
        torch = import_torch() if import_torch else __import__("torch")
    except Exception as exc:  # noqa: BLE001 - a broken torch is exactly what to report
        return [Finding("problem", f"torch cannot be imported: {type(exc).__name__}: {exc}",
                        "pip install torch (CPU only: " + CPU_TORCH.replace("--force-reinstall ", "") + ")")]
    cuda = getattr(torch.version, "cuda", None)
    if cuda and not torch.cuda.is_available():
        return [Finding("note", f"torch {torch.__version__} is a CUDA {cuda} build, but no GPU is usable here: "
                        f"it works on the CPU, but takes gigabytes a CPU build does not", "for a CPU-only "
                        f"machine: {CPU_TORCH}")]
    device = "GPU available" if cuda and torch.cuda.is_available() else "CPU build"
    return [Finding("ok", f"torch {torch.__version__} ({device})")]


def version_findings(version_of: Callable[[str], str] = md.version) -> list[Finding]:
    """Third-party versions medkit needs more of than a resolver may have left (timm >= 1.0.16)."""
    try:
        timm = version_of("timm")
    except md.PackageNotFoundError:
        return [Finding("problem", "timm is not installed", "pip install 'timm>=1.0.16'")]
    if _version_tuple(timm) < TIMM_MIN:
        return [Finding("problem", f"timm {timm} is too old: the encoder passes attn_mask to timm's blocks, "
                        f"which timm accepts from 1.0.16", "pip install -U 'timm>=1.0.16'")]
    return [Finding("ok", f"timm {timm}")]


def diagnose(host: Any | None = None, *, distributions: Iterable[md.Distribution] | None = None,
             package_dir: Path | None = None, import_torch: Callable[[], Any] | None = None,
             version_of: Callable[[str], str] = md.version) -> list[Finding]:
    """Every finding about this environment, problems first within each section."""
    if host is None:
        from medkit.registry.host import get_host

        host = get_host()
    dists = list(distributions if distributions is not None else md.distributions())
    if package_dir is None:
        import medkit

        package_dir = Path(medkit.__file__).resolve().parent
    installed = {_norm(d.metadata["Name"] or "") for d in dists}
    findings = [Finding("ok", f"Python {sys.version.split()[0]} at {sys.executable}")]
    findings += foreign_medkit(dists, package_dir)
    findings += plugin_findings(host, installed)
    findings += version_findings(version_of)
    findings += torch_findings(import_torch)
    return findings
