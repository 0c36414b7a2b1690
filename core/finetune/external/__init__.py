"""The released comparison backbones (``--backbone desd:PATH``...), found through the plugin host: each is a
``backbone`` component (``medkit_register_backbones``, e.g. medkit-plugin-backbones) whose factory is a
:class:`~medkit.finetune.external.base.Family`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from medkit.api.components import Components
from medkit.api.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # importing this package stays light (no torch)
    from torch import nn

    from medkit.finetune.external.base import ExternalBackbone, Family, KeyReport

log = logging.getLogger(__name__)

#: ``--backbone`` prefixes that are not released models (handled by medkit.finetune.backbones).
NOT_RELEASED = ("medkit", "timm", "monai")

__all__ = ["build_external", "build_fusion_cnn", "check_dims", "convert_release", "family", "names",
           "normalize_spec", "parse_spec", "unknown_backbone"]


def names(components: Components) -> list[str]:
    """The registered backbone names (``desd``, ``pcrlv2-2d`` …)."""
    return components.names("backbone")


def family(name: str, components: Components) -> Family:
    """The :class:`Family` registered as backbone ``name`` (a :class:`PluginError` naming the known
    ones, a close match, or the distribution to install, otherwise)."""
    from medkit.api.errors import PluginError
    from medkit.finetune.external.base import Family

    found = components.spec("backbone", name).load_factory()
    if not isinstance(found, Family):
        raise PluginError(f"backbone {name!r}: its factory is a {type(found).__name__}, not a medkit.api.Family; "
                          f"register BackboneSpec({name!r}, <a Family>)")
    return found


def parse_spec(spec: str, components: Components) -> tuple[str, str | None] | None:
    """``("desd", "PATH")`` for ``desd:PATH``, ``("desd", None)`` for a bare ``desd`` (random init);
    ``None`` when ``spec`` names no registered backbone (``medkit``, ``timm:…``, ``monai:…``)."""
    name, sep, path = str(spec).partition(":")
    if name in NOT_RELEASED or name not in names(components):
        return None
    return name, (path or None) if sep else None


def normalize_spec(spec: str, components: Components) -> str:
    """``spec`` with its path made absolute, so that the run's config rebuilds it from anywhere."""
    parsed = parse_spec(spec, components)
    if parsed is None or parsed[1] is None:
        return spec
    return f"{parsed[0]}:{Path(parsed[1]).expanduser().resolve()}"


def check_dims(name: str, dims: int, dataset: str, components: Components) -> None:
    """The supplement's "×": a one-line :class:`ConfigError` when backbone ``name`` cannot take
    ``dims``-D data, e.g. ``--backbone desd: DeSD is a 3D model; ChestXR is 2D``."""
    fam = family(name, components)
    if int(dims) not in fam.dims:
        raise ConfigError(f"--backbone {name}: {fam.title} is a {fam.dims_text()} model; {dataset} is {dims}D "
                          f"(supplement Table 2: ×); choose a {int(dims)}D backbone")


def unknown_backbone(spec: str, components: Components) -> ConfigError:
    """The error for a ``--backbone`` that names nothing: what is accepted, and what the plugin host
    says of the name (a close match, or the distribution that provides it)."""
    from medkit.api.errors import PluginError

    try:
        family(str(spec).partition(":")[0], components)
        why = ""
    except PluginError as exc:
        why = f"; {exc}"
    return ConfigError(f"--backbone {spec}: expected medkit, timm:<model>, monai:<network> or a released model "
                       f"({', '.join(f + ':PATH' for f in names(components)) or 'none installed'}){why}")


def build_external(spec: str, dims: int, *, components: Components, pretrained: bool = True) -> ExternalBackbone:
    """The backbone of ``spec``; with ``pretrained`` and a path, filled from the released checkpoint
    (or its ``medkit convert`` output). A bare family name gives random initialisation."""
    parsed = parse_spec(spec, components)
    if parsed is None:
        raise unknown_backbone(spec, components)
    from medkit.finetune.external.base import load_into

    name, path = parsed
    check_dims(name, dims, f"the {dims}D data", components)
    fam = family(name, components)
    backbone = fam.build(int(dims))
    if pretrained and path:
        load_into(backbone, fam, path)
    elif pretrained:
        log.warning("--backbone %s without a checkpoint path: %s starts from random initialisation", spec, fam.title)
    return backbone


def build_fusion_cnn(spec: str, dims: int, *, in_channels: int, out_channels: int, components: Components,
                     pretrained: bool = True) -> nn.Module:
    """The CNN branch of the ViT + CNN fusion for ``task.fusion=desd:PATH``: the backbone's fusion network
    (DeSD's ResUNet), its encoder filled from the released checkpoint (supplement D, Fig. 2)."""
    parsed = parse_spec(spec, components)
    fam = family(parsed[0], components) if parsed is not None else None
    if parsed is None or fam is None or fam.fusion is None:  # only a backbone with a fusion network
        raise ConfigError(f"task.fusion={spec}: the pre-trained CNN branch is desd:PATH (DeSD's ResUNet, "
                          f"supplement D), or a monai.networks.nets name such as BasicUNet")
    if pretrained and not parsed[1]:
        log.warning("task.fusion=%s without a checkpoint path: the ResUNet starts from random initialisation", spec)
    return fam.fusion(int(dims), int(in_channels), int(out_channels), parsed[1] if pretrained else None)


def convert_release(name: str, checkpoint: str | Path, out: str | Path, *, components: Components,
                    force: bool = False) -> KeyReport:
    """``medkit convert <name>``: the released checkpoint → ``out`` (safetensors with our key names, the
    family in its metadata), after building and loading the model to prove it fits."""
    from medkit.finetune.external.base import CONVERTED_FORMAT, load_into
    from medkit.storage.files import save_tensors, sha256_file

    fam = family(name, components)
    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise ConfigError(f"{out}: the converted file must end in .safetensors")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; choose another name or pass --force to replace it")
    src = Path(checkpoint).expanduser()
    if src.suffix == ".safetensors":
        raise CheckpointError(f"{src} is already a safetensors file; give the released {fam.title} checkpoint")
    backbone = fam.build(fam.dims[0])
    report = load_into(backbone, fam, src)
    meta = {"format": CONVERTED_FORMAT, "family": fam.name, "repository": fam.repository,
            "source_sha256": sha256_file(src), "converted": str(len(report.converted)),
            "dropped": str(len(report.dropped))}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(out, backbone.weights_module().state_dict(), metadata=meta)
    return report

