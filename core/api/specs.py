"""Frozen specs a plugin passes to ``register(...)`` in its registration hooks."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

KINDS: tuple[str, ...] = ("modality", "tokenizer", "objective", "strategy", "task", "backbone")


@dataclass(frozen=True)
class ComponentSpec:
    """What a plugin provides under one name of one kind.

    Attributes:
        name: the name users select (``ct``, ``patch_3d``, ``mae``, ``rehearsal``...).
        factory: the callable that builds the component, or ``"module:attr"`` to import it lazily
            (keeps ``medkit plugins list`` free of heavy imports).
        summary: one line shown by ``medkit plugins list``.
        context: names of factory arguments the engine passes itself (excluded from the config).
        meta: kind-specific facts (a modality's ``dims``, ``default_tokenizer``...), JSON-serialisable.
    """

    name: str
    factory: Callable[..., Any] | str
    summary: str = ""
    context: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    kind: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"invalid component name {self.name!r}: use letters, digits, '_' or '-'")
        if self.kind and self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")

    def load_factory(self) -> Callable[..., Any]:
        """Return the factory, importing it first when it was given as ``"module:attr"``."""
        if callable(self.factory):
            return self.factory
        module_name, _, attr = str(self.factory).partition(":")
        module = importlib.import_module(module_name)
        target: Any = module
        for part in attr.split("."):
            target = getattr(target, part)
        return target


def _kind_spec(kind: str) -> type[ComponentSpec]:
    def init(self: ComponentSpec, name: str, factory: Any, summary: str = "",
             context: tuple[str, ...] = (), meta: dict[str, Any] | None = None) -> None:
        ComponentSpec.__init__(self, name=name, factory=factory, summary=summary,
                               context=tuple(context), meta=dict(meta or {}), kind=kind)

    return type(f"{kind.capitalize()}Spec", (ComponentSpec,), {"__init__": init, "__doc__":
                f"Spec of a {kind}; see :class:`ComponentSpec`."})


ModalitySpec = _kind_spec("modality")
TokenizerSpec = _kind_spec("tokenizer")
ObjectiveSpec = _kind_spec("objective")
StrategySpec = _kind_spec("strategy")
TaskSpec = _kind_spec("task")
#: A released comparison backbone for ``medkit finetune --backbone NAME:PATH``; its factory is a
#: :class:`medkit.api.Family` (calling it with ``dims`` builds the backbone).
BackboneSpec = _kind_spec("backbone")
