"""Looking components up in the plugin host's registries: specs, helpful errors for missing names, factories."""

from __future__ import annotations

import difflib
from typing import Any, Iterable

from medkit.api.errors import PluginError
from medkit.api.specs import KINDS, ComponentSpec
from medkit.registry.known import KNOWN, provider_of
from medkit.registry.loading import describe as _describe
from medkit.registry.missing import fixes as _fixes, missing_message as _missing_message, run_needs
from medkit.registry.record import PluginRecord


class RegistryLookup:
    """The lookups of :class:`medkit.registry.host.PluginHost`, over the registries its loading filled:
    a spec by name (or a :class:`PluginError` that says why not and how to fix it), every missing
    name of a run at once, building a component through its factory, importing every factory."""

    records: list[PluginRecord]
    registries: dict[str, dict[str, tuple[ComponentSpec, PluginRecord]]]
    clashes: dict[tuple[str, str], list[str]]
    skipped: dict[str, str]
    skipped_dists: list[str]

    def names(self, kind: str) -> list[str]:
        return sorted(self.registries[kind])

    def spec(self, kind: str, name: str) -> ComponentSpec:
        """The spec registered as ``name`` of ``kind``, or a :class:`PluginError` that helps."""
        if kind not in self.registries:
            raise PluginError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        if (kind, name) in self.clashes:
            a, b = self.clashes[(kind, name)]
            raise PluginError(f"{kind} {name!r} is provided by both {a} and {b}; uninstall one or set "
                              f"MEDKIT_DISABLE_PLUGINS={b}")
        if name in self.registries[kind]:
            return self.registries[kind][name][0]
        for record in self.records:
            if record.error and name in record.would_provide.get(kind, []):
                raise PluginError(f"{kind} {name!r} comes from plugin {record.dist} {record.version}, "
                                  f"which failed to load: {record.error}")
        dist = provider_of(kind, name)
        if dist and dist in self.skipped:
            reason = self.skipped[dist]
            raise PluginError(f"{kind} {name!r} comes from {dist}, which is installed but {reason}; "
                              f"{_fixes([(kind, name, dist, reason)])}")
        known = self.names(kind)
        msg = f"unknown {kind} {name!r}; known {kind} names: {', '.join(known) or 'none installed'}"
        close = difflib.get_close_matches(name, known + list(KNOWN.get(kind, {})), n=1)
        target = name
        if close and close[0] != name:
            msg += f"; did you mean {close[0]!r}?"
            target = close[0]
        dist = provider_of(kind, target)
        if dist and target not in known and dist in self.skipped:
            msg += f" (from {dist}, installed but {self.skipped[dist]})"
        elif dist and target not in known:
            msg += f" install it with: pip install {dist}"
        left_out = [d for d in self.skipped_dists if d != dist]
        if left_out:
            msg += f" (installed but left out: {', '.join(f'{d} ({self.skipped[d]})' for d in left_out)})"
        broken = [r.dist for r in self.records if r.error]
        if broken:
            msg += f" (broken plugins: {', '.join(broken)}; see medkit plugins check)"
        raise PluginError(msg)

    def why_missing(self, kind: str, name: str) -> tuple[str, str] | None:
        """``(distribution, reason)`` for a built-in name this host lacks (None: unknown name).

        The reason is ``"not installed"``, ``"disabled by MEDKIT_DISABLE_PLUGINS"``, ``"not selected
        by MEDKIT_LOAD_PLUGINS"`` or ``"failed to load: ..."``.
        """
        dist = provider_of(kind, name)
        if dist is None:
            return None
        for record in self.records:
            if record.dist == dist and record.error:
                return dist, f"failed to load: {record.error}"
        return dist, self.skipped.get(dist, "not installed")

    def require(self, needs: Iterable[tuple[str, str]]) -> None:
        """Check every ``(kind, name)`` a run needs at once: one :class:`PluginError` lists all
        that are missing, each with its distribution and why (not installed, disabled, not
        selected, broken), and one ``pip install`` line for those not installed."""
        needs = list(dict.fromkeys(needs))
        for kind, name in needs:
            if (kind, name) in self.clashes or kind not in self.registries:
                self.spec(kind, name)
        missing: list[tuple[str, str, str, str]] = []
        unknown: list[tuple[str, str]] = []
        for kind, name in needs:
            if name in self.registries[kind]:
                continue
            why = self.why_missing(kind, name)
            if why is None:
                unknown.append((kind, name))
            else:
                missing.append((kind, name, *why))
        if not missing and not unknown:
            return
        if not missing or (len(missing) == 1 and not unknown and not missing[0][3].startswith(
                ("disabled", "not selected", "not installed"))):
            kind, name = (unknown or [(missing[0][0], missing[0][1])])[0]
            self.spec(kind, name)  # the single-name message (suggestions, clashes, broken plugin)
        msg = _missing_message(missing)
        for kind, name in unknown:
            msg += f"; unknown {kind} {name!r} (known: {', '.join(self.names(kind)) or 'none installed'})"
        raise PluginError(msg)

    def require_run(self, modalities: Iterable[str], strategy: str) -> None:
        """:meth:`require` for everything a run needs (see :func:`run_needs`)."""
        self.require(run_needs(self, modalities, strategy))

    def provider(self, kind: str, name: str) -> PluginRecord:
        self.spec(kind, name)
        return self.registries[kind][name][1]

    def create(self, kind: str, name: str, **overrides: Any) -> Any:
        """Build ``name`` of ``kind`` through its registered factory."""
        spec = self.spec(kind, name)
        try:
            factory = spec.load_factory()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            dist = self.registries[kind][name][1].dist
            raise PluginError(f"{kind} {name!r} from {dist}: cannot import its factory "
                              f"{spec.factory!r}: {_describe(exc)}") from exc
        return factory(**overrides)

    def distributions(self) -> list[str]:
        """Names of the loaded plugin distributions (manifests record their versions)."""
        return [r.dist for r in self.records]

    def check_factories(self) -> list[tuple[PluginRecord, str]]:
        """Import every registered factory (``medkit plugins check``); a spec naming a module or
        attribute that cannot be imported marks its plugin broken. Returns ``(record, problem)``."""
        problems: list[tuple[PluginRecord, str]] = []
        for kind in KINDS:
            for name, (spec, record) in sorted(self.registries[kind].items()):
                try:
                    factory = spec.load_factory()
                    if not callable(factory):
                        raise PluginError(f"{spec.factory!r} is a {type(factory).__name__}, not callable")
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001
                    what = f"{kind} {name!r}: cannot import its factory {spec.factory!r}: {_describe(exc)}"
                    record.error = f"{record.error}; {what}" if record.error else what
                    problems.append((record, what))
        return problems
