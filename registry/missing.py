"""The one message for components a run needs but cannot have: every missing name with why (not
installed, disabled, not selected, broken) and one fix per reason (a single ``pip install`` line)."""

from __future__ import annotations

from typing import Any, Iterable

from medkit.registry.known import ALL_INSTALL, MODALITY_DEFAULTS


def missing_message(missing: list[tuple[str, str, str, str]]) -> str:
    """One sentence for every missing ``(kind, name, distribution, reason)`` and what to do."""
    parts = [f"{kind} {name!r} ({dist}: {reason})" for kind, name, dist, reason in missing]
    noun = "component is" if len(missing) == 1 else "components are"
    return f"{len(missing)} {noun} not available: {', '.join(parts)}; {fixes(missing)}"


def fixes(missing: list[tuple[str, str, str, str]]) -> str:
    """What to do about missing ``(kind, name, distribution, reason)``: one clause per reason."""
    by_reason: dict[str, list[str]] = {}
    for _, _, dist, reason in missing:
        key = reason if not reason.startswith("failed") else "failed"
        if dist not in by_reason.setdefault(key, []):
            by_reason[key].append(dist)
    out = []
    if "not installed" in by_reason:
        out.append(f"install {'it' if len(by_reason['not installed']) == 1 else 'them'} with: "
                     f"pip install {' '.join(by_reason['not installed'])} (every built-in plugin: "
                     f"{ALL_INSTALL})")
    if "disabled by MEDKIT_DISABLE_PLUGINS" in by_reason:
        out.append(f"remove {', '.join(by_reason['disabled by MEDKIT_DISABLE_PLUGINS'])} from "
                     f"MEDKIT_DISABLE_PLUGINS")
    if "not selected by MEDKIT_LOAD_PLUGINS" in by_reason:
        out.append(f"add {', '.join(by_reason['not selected by MEDKIT_LOAD_PLUGINS'])} to "
                     f"MEDKIT_LOAD_PLUGINS (or unset it)")
    if "failed" in by_reason:
        out.append(f"repair {', '.join(by_reason['failed'])} (see medkit plugins check / medkit doctor)")
    return "; ".join(out)


def run_needs(host: Any, modalities: Iterable[str], strategy: str) -> list[tuple[str, str]]:
    """Every ``(kind, name)`` a run of ``modalities`` with ``strategy`` needs: each modality, its
    default tokenizer and objective (from its spec, or the built-in defaults when it is missing),
    and the strategy."""
    needs: list[tuple[str, str]] = []
    for m in modalities:
        needs.append(("modality", m))
        entry = host.registries["modality"].get(m)
        meta = entry[0].meta if entry is not None else {}
        tok, obj = meta.get("default_tokenizer"), meta.get("default_objective")
        if entry is None and m in MODALITY_DEFAULTS:
            tok, obj = MODALITY_DEFAULTS[m]
        if tok:
            needs.append(("tokenizer", tok))
        if obj:
            needs.append(("objective", obj))
    needs.append(("strategy", strategy))
    return needs
