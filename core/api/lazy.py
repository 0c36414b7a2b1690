"""Lazy re-export of a public namespace (PEP 562): a name is imported from its defining module on first use."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, MutableMapping, Sequence


def lazy_exports(namespace: MutableMapping[str, Any], exports: Mapping[str, str], public: Sequence[str],
                 unknown: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a namespace that re-exports ``exports``.

    Args:
        namespace: the namespace module's ``globals()`` (a loaded value is cached there, so the second
            access is an ordinary attribute lookup).
        exports: public name → ``"module"`` or ``"module:attribute"`` (the attribute where it differs).
        public: the namespace's ``__all__``.
        unknown: the sentence after "module 'X' has no attribute 'name';" that says where to look.
    """
    module_name = str(namespace.get("__name__"))

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}; {unknown}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *public})

    return __getattr__, __dir__
