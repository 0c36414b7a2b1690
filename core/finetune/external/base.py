"""What the comparison backbones share: the family record, the interface the task heads read, reading an
authors' checkpoint through an allow-list, and the key-mapping report."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, cast

import torch
from torch import nn

from medkit.api.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: The ``format`` metadata of a safetensors file written by ``medkit convert <family>``.
CONVERTED_FORMAT = "medkit-external-1"
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Family:
    """One released pre-trained model.

    Attributes:
        name: the ``--backbone`` prefix (``desd``).
        title: its name in the supplement (``DeSD``).
        repository: the authors' GitHub repository.
        dims: the input dimensions it accepts.
        allowed: the classes its ``.pth`` may pickle besides tensors, numbers and containers.
        build: ``build(dims) -> ExternalBackbone`` (random init).
        map_keys: ``map_keys(obj, source) -> (state, dropped)``: the loaded object → tensors under our
            module's names, and each released key not used → why.
        paper_params: the parameter count the paper (or the authors' code) gives, as text.
        release: the released file name(s).
        fusion: ``fusion(dims, in_channels, out_channels, path) -> nn.Module``: the CNN branch of the
            ViT + CNN fusion (``task.fusion=NAME:PATH``) filled from the release at ``path`` (``None``:
            random init); ``None`` when the family offers none.

    A plugin registers one as the factory of a :class:`medkit.api.BackboneSpec`; calling it builds the
    backbone (``family(dims)``, random init).
    """

    name: str
    title: str
    repository: str
    dims: tuple[int, ...]
    allowed: tuple[type, ...]
    build: Callable[[int], ExternalBackbone]
    map_keys: Callable[[Any, str], tuple[StateDict, dict[str, str]]]
    paper_params: str
    release: str
    fusion: Callable[[int, int, int, str | None], nn.Module] | None = None

    def __call__(self, dims: int) -> ExternalBackbone:
        return self.build(int(dims))

    def dims_text(self) -> str:
        return " and ".join(f"{d}D" for d in self.dims)


@dataclass
class KeyReport:
    """How a released checkpoint filled our module: every released key is converted or dropped."""

    family: str
    source: str
    released: int  # tensors in the released entry
    expected: int  # tensors our module has
    converted: list[str] = field(default_factory=list)  # our keys filled from the file
    dropped: dict[str, str] = field(default_factory=dict)  # released key → why it is not used

    @property
    def coverage(self) -> float:
        """Share of our module's tensors filled from the file (1.0: nothing left at random init)."""
        return len(self.converted) / max(self.expected, 1)

    def summary(self) -> str:
        reasons = sorted(set(self.dropped.values()))
        return (f"{self.family}: {len(self.converted)}/{self.expected} tensors loaded from {self.source} "
                f"(coverage {self.coverage:.0%}); {len(self.dropped)} of its {self.released} released tensors "
                f"dropped{' (' + '; '.join(reasons) + ')' if reasons else ''}")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["coverage"] = self.coverage
        return out


def entry(obj: Any, names: Sequence[str | None], source: str, what: str) -> dict[str, torch.Tensor]:
    """The first state dict of ``obj[name]`` for ``names`` (``None``: ``obj`` itself is the state dict)."""
    for name in names:
        value = obj if name is None else (obj.get(name) if isinstance(obj, dict) else None)
        if isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            return {str(k): v for k, v in value.items()}
    found = sorted(str(k) for k in obj) if isinstance(obj, dict) else type(obj).__name__
    wanted = ", ".join(repr(n) if n else "a bare state dict" for n in names)
    raise CheckpointError(f"{source}: no {what} state dict in it (looked for {wanted}; the file holds {found}); "
                          f"give the released {what} checkpoint")


def split_keys(state: Mapping[str, torch.Tensor], rules: Sequence[tuple[str, str | None, str]], source: str,
               title: str) -> tuple[StateDict, dict[str, str]]:
    """Sort released keys by ``(prefix, new_prefix, reason)`` rules, first match wins: ``new_prefix``
    ``None`` drops the key with ``reason``; a key no rule matches is refused by name. A leading
    ``module.`` (a ``DataParallel`` wrapper) is ignored when matching; dropped keys keep their released
    names."""
    kept: StateDict = {}
    dropped: dict[str, str] = {}
    for key, value in state.items():
        bare = key[len("module."):] if key.startswith("module.") else key
        for prefix, new, reason in rules:
            if bare.startswith(prefix):
                if new is None:
                    dropped[key] = reason
                else:
                    kept[new + bare[len(prefix):]] = value
                break
        else:
            raise CheckpointError(f"{source}: unexpected key {key!r}; the released {title} checkpoint has no such "
                                  f"tensor, so this file is not it")
    return kept, dropped


def stack_images(samples: Sequence[dict[str, Any]], modality: str, dims: int, in_chans: int, who: str
                 ) -> dict[str, torch.Tensor]:
    from medkit.finetune.backbones import _stack_images

    return _stack_images(samples, modality, dims, in_chans, who)


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return nn.functional.interpolate(x, size=tuple(int(s) for s in size), mode=mode, align_corners=False)


class ExternalBackbone(nn.Module):
    """A released model behind the interface of :mod:`medkit.finetune.backbones`: ``collate``,
    ``pooled`` (``[B, embed_dim]``) and ``feature_maps`` (four stages ``[B, C_i, *grid_i]`` for the
    UNETR decoder, which resamples them to its 1/16 grid).

    Subclasses set ``family``, build ``self.net`` (the module the released keys address, see
    :meth:`weights_module`) and implement :meth:`stages`.
    """

    kind = "external"
    is_segmenter = False
    family = ""

    def __init__(self, *, dims: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.dims, self.in_chans, self.embed_dim = int(dims), int(in_chans), int(embed_dim)
        self.depth = 4
        self.patch_size = (16,) * self.dims  # the UNETR decoder's grid; stage maps are resampled to it
        self.key_report: KeyReport | None = None

    def weights_module(self) -> nn.Module:
        """The module whose ``state_dict`` the converted keys address."""
        return cast(nn.Module, self.net)  # every subclass sets self.net

    def default_blocks(self) -> list[int]:
        return [0, 1, 2, 3]

    def collate(self, samples: Sequence[dict[str, Any]], modality: str) -> dict[str, torch.Tensor]:
        return stack_images(samples, modality, self.dims, self.in_chans, f"backbone {self.family}")

    def stages(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Four stage outputs ``[B, C_i, *grid_i]``, shallow to deep."""
        raise NotImplementedError

    def pooled(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
               pooling: str = "mean") -> torch.Tensor:
        if pooling == "cls":
            raise ConfigError(f"backbone {self.family} has no class token; use task.pooling=mean")
        last = self.stages(inputs)[-1]
        return last.mean(dim=tuple(range(2, last.ndim)))

    def feature_maps(self, inputs: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        maps = self.stages(inputs)
        bad = [b for b in blocks if not 0 <= int(b) < len(maps)]
        if bad:
            raise ConfigError(f"backbone {self.family} has stages 0..{len(maps) - 1}; task.blocks asks for {bad}")
        return [maps[int(b)] for b in blocks]


def read_converted(path: Path, family: Family) -> StateDict:
    """The tensors of a safetensors file written by ``medkit convert <family>`` (refused when another
    family wrote it, or when it is not such a file)."""
    from safetensors import safe_open

    from medkit.storage.files import load_tensors

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); convert the released "
                              f"checkpoint with: medkit convert {family.name} CHECKPOINT OUT.safetensors") from exc
    if meta.get("format") != CONVERTED_FORMAT:
        raise CheckpointError(f"{path} was not written by `medkit convert {family.name}` (format "
                              f"{meta.get('format')!r}); convert the released checkpoint first")
    if meta.get("family") != family.name:
        raise CheckpointError(f"{path} holds {meta.get('family')!r} weights, not {family.name}; use "
                              f"--backbone {meta.get('family')}:{path}")
    return load_tensors(path)


def read_release(path: Path, family: Family) -> tuple[StateDict, dict[str, str], int]:
    """``(state, dropped, released)`` of an authors' ``.pth``: read with ``weights_only=True`` and
    ``family.allowed`` only, keys mapped by ``family.map_keys``."""
    from medkit.storage.torchfile import load_restricted, qualname

    allowed = ", ".join(qualname(c) for c in family.allowed) or "nothing else"

    def refusal(name: str) -> str:
        return (f"{path}: refusing to load it: the file pickles {name}, which the released {family.title} "
                f"checkpoint ({family.repository}) does not contain (tensors, numbers and {allowed}); "
                f"medkit never unpickles other objects")

    obj = load_restricted(path, family.allowed, refusal=refusal,
                          unreadable=lambda why: f"{path} is not a readable torch checkpoint ({why}); give the "
                                                 f"released {family.title} file ({family.release})")
    state, dropped = family.map_keys(obj, str(path))
    return state, dropped, len(state) + len(dropped)


def load_into(backbone: ExternalBackbone, family: Family, path: str | Path) -> KeyReport:
    """Fill ``backbone`` from a released ``.pth`` or a converted ``.safetensors``: every tensor of our
    module must come from the file (no missing key), and every released tensor is used or dropped by a
    named rule (no unexpected key); shapes must match."""
    from medkit.storage.files import load_state_checked

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"--backbone {family.name}:{path}: no such file; give the released {family.title} "
                              f"checkpoint ({family.release}) or its `medkit convert {family.name}` output")
    if path.suffix == ".safetensors":
        state, dropped = read_converted(path, family), dict[str, str]()
        released = len(state)
    else:
        state, dropped, released = read_release(path, family)
    module = backbone.weights_module()
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(f"{path}: missing {family.title} tensor {missing[0]} (and {len(missing) - 1} more); "
                              f"the file is not the released {family.title} checkpoint ({family.release})")
    load_state_checked(module, state, source=str(path))
    report = KeyReport(family=family.name, source=str(path), released=released, expected=len(own),
                       converted=list(own), dropped=dropped)
    backbone.key_report = report
    log.info("%s", report.summary())
    return report
