"""Checking one plugin for the plugin manager (API version, hooks) and guarding its implementations."""

from __future__ import annotations

import difflib
import functools
import logging
import traceback
from contextlib import AbstractContextManager, nullcontext
from types import CodeType
from typing import Any, Callable, Iterable

import pluggy

from medkit.api.version import check_plugin_api
from medkit.api import hookspecs
from medkit.api.errors import PluginError

log = logging.getLogger(__name__)

SPEC_NAMES = frozenset(n for n in dir(hookspecs) if n.startswith("medkit_"))
def describe(exc: BaseException) -> str:
    """One line for what a plugin raised (``SystemExit`` spelled out: a plugin must never exit)."""
    if isinstance(exc, PluginError):
        return str(exc)
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) raised while loading (a plugin must never exit the process)"
    return f"{type(exc).__name__}: {exc}"


def _unknown_hook(name: str) -> PluginError:
    close = difflib.get_close_matches(name, sorted(SPEC_NAMES), n=1)
    return PluginError(f"unknown hook {name}{f' (did you mean {close[0]}?)' if close else ''}")


def validate_plugin(plugin: object) -> None:
    """Refuse a plugin (a module or an object, e.g. a class instance) written for another API, or with
    a ``medkit_*`` function that is not marked with ``@hookimpl`` (pluggy would silently skip it)."""
    if isinstance(plugin, type):
        raise PluginError(f"entry point names the class {plugin.__name__}; name an instance of it (a module "
                          f"or an object whose methods are marked with @hookimpl)")
    where = getattr(plugin, "__name__", type(plugin).__name__)
    check_plugin_api(where, getattr(plugin, "MEDKIT_API_VERSION", None))
    for attr in dir(plugin):
        if not attr.startswith("medkit_"):
            continue
        value = getattr(plugin, attr, None)
        if not callable(value) or hasattr(value, f"{hookspecs.PROJECT}_impl"):
            continue  # marked ones are checked by pluggy (PluginManager.check_pending)
        if attr not in SPEC_NAMES:
            raise _unknown_hook(attr)
        raise PluginError(f"hook {attr} is not marked with @hookimpl (from medkit.api import hookimpl)")


def check_pending(pm: pluggy.PluginManager) -> None:
    """``pm.check_pending()`` with medkit's message: a marked hook no spec declares, with a suggestion."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        unknown = [n for n in dir(exc.plugin) if n.startswith("medkit_") and n not in SPEC_NAMES
                   and hasattr(getattr(exc.plugin, n, None), f"{hookspecs.PROJECT}_impl")]
        raise (_unknown_hook(unknown[0]) if unknown else PluginError(str(exc))) from exc


def guard(impl: pluggy.HookImpl, on_error: Callable[[BaseException], None],
          scope: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
    """Make ``impl`` report what it raises to ``on_error`` instead of raising.

    Hand-written because pluggy stops a hook call at the first exception, while medkit keeps one broken
    plugin from silencing the others; the hook call itself stays pluggy's (``tryfirst``/``trylast``
    order, wrappers, ``firstresult``). Wrappers are left alone (they see the call's outcome); see
    :func:`culprit` for what they raise. The call runs inside ``scope()`` (the host uses it to
    attribute ``register(spec)`` calls to the plugin).
    """
    if impl.hookwrapper or impl.wrapper:
        return
    function = impl.function

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            with scope():
                return function(*args, **kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a plugin (even SystemExit) never stops the host
            on_error(exc)
            return None

    # pluggy declares HookImpl.function Final; replacing it in place is how every call of this
    # implementation, through any hook caller, goes through the guard
    impl.function = guarded  # type: ignore[misc]


def culprit(exc: BaseException, impls: Iterable[pluggy.HookImpl]) -> str | None:
    """The name of the plugin whose implementation raised ``exc`` (the innermost frame of its traceback
    that runs one of ``impls``), or ``None``."""
    codes: dict[CodeType, str] = {}
    for impl in impls:
        fn = getattr(impl.function, "__wrapped__", impl.function)
        code = getattr(getattr(fn, "__func__", fn), "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        if frame.f_code in codes:
            return codes[frame.f_code]
    return None
