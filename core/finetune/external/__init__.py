"""The supplement's comparison backbones (§C Table 2, §D Table 3) from their released checkpoints:
``--backbone desd:PATH | pcrlv2-2d:PATH | pcrlv2-3d:PATH | path-dino:PATH | unimiss:PATH``."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from medkit.api.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # importing this package stays light (no torch): the CLI lists FAMILIES at start-up
    from torch import nn

    from medkit.finetune.external.base import ExternalBackbone, Family, KeyReport

log = logging.getLogger(__name__)

#: ``--backbone`` prefix → (module, attribute) of its :class:`Family`.
FAMILIES: dict[str, tuple[str, str]] = {
    "desd": ("desd", "FAMILY"), "pcrlv2-2d": ("pcrlv2", "FAMILY_2D"), "pcrlv2-3d": ("pcrlv2", "FAMILY_3D"),
    "path-dino": ("path_dino", "FAMILY"), "unimiss": ("unimiss", "FAMILY"),
}

__all__ = ["FAMILIES", "build_external", "build_fusion_cnn", "check_dims", "convert_release", "family",
           "normalize_spec", "parse_spec"]


def family(name: str) -> Family:
    """The :class:`Family` called ``name`` (``desd``, ``pcrlv2-2d`` …)."""
    if name not in FAMILIES:
        import difflib

        close = difflib.get_close_matches(name, list(FAMILIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown pre-trained model {name!r}{hint} "
                          f"(known: {', '.join(FAMILIES)})")
    module, attr = FAMILIES[name]
    return getattr(importlib.import_module(f"medkit.finetune.external.{module}"), attr)


def parse_spec(spec: str) -> tuple[str, str | None] | None:
    """``("desd", "PATH")`` for ``desd:PATH``, ``("desd", None)`` for a bare ``desd`` (random init);
    ``None`` when ``spec`` names no family here (``medkit``, ``timm:…``, ``monai:…``)."""
    name, sep, path = str(spec).partition(":")
    if name not in FAMILIES:
        return None
    return name, (path or None) if sep else None


def normalize_spec(spec: str) -> str:
    """``spec`` with its path made absolute, so that the run's config rebuilds it from anywhere."""
    parsed = parse_spec(spec)
    if parsed is None or parsed[1] is None:
        return spec
    return f"{parsed[0]}:{Path(parsed[1]).expanduser().resolve()}"


def check_dims(name: str, dims: int, dataset: str) -> None:
    """The supplement's "×": a one-line :class:`ConfigError` when family ``name`` cannot take
    ``dims``-D data, e.g. ``--backbone desd: DeSD is a 3D model; ChestXR is 2D``."""
    fam = family(name)
    if int(dims) not in fam.dims:
        raise ConfigError(f"--backbone {name}: {fam.title} is a {fam.dims_text()} model; {dataset} is {dims}D "
                          f"(supplement Table 2: ×); choose a {int(dims)}D backbone")


def build_external(spec: str, dims: int, *, pretrained: bool = True) -> ExternalBackbone:
    """The backbone of ``spec``; with ``pretrained`` and a path, filled from the released checkpoint
    (or its ``medkit convert`` output). A bare family name gives random initialisation."""
    parsed = parse_spec(spec)
    if parsed is None:
        raise ConfigError(f"--backbone {spec}: expected one of {', '.join(f + ':PATH' for f in FAMILIES)}")
    from medkit.finetune.external.base import load_into

    name, path = parsed
    check_dims(name, dims, f"the {dims}D data")
    fam = family(name)
    backbone = fam.build(int(dims))
    if pretrained and path:
        load_into(backbone, fam, path)
    elif pretrained:
        log.warning("--backbone %s without a checkpoint path: %s starts from random initialisation", spec, fam.title)
    return backbone


def build_fusion_cnn(spec: str, dims: int, *, in_channels: int, out_channels: int, pretrained: bool = True
                     ) -> nn.Module:
    """The CNN branch of the ViT + CNN fusion for ``task.fusion=desd:PATH``: DeSD's ResUNet, its
    encoder filled from the released checkpoint (supplement D, Fig. 2)."""
    from medkit.finetune.external import desd
    from medkit.finetune.external.base import load_into

    parsed = parse_spec(spec)
    if parsed is None or parsed[0] != "desd":
        raise ConfigError(f"task.fusion={spec}: the pre-trained CNN branch is desd:PATH (DeSD's ResUNet, "
                          f"supplement D), or a monai.networks.nets name such as BasicUNet")
    net = desd.build_resunet(int(dims), int(in_channels), int(out_channels))
    if pretrained and parsed[1]:
        holder = desd.DeSDBackbone()
        holder.net = net.encoder  # load_into fills the module the released keys address
        load_into(holder, desd.FAMILY, parsed[1])
    elif pretrained:
        log.warning("task.fusion=%s without a checkpoint path: the ResUNet starts from random initialisation", spec)
    return net


def convert_release(name: str, checkpoint: str | Path, out: str | Path, *, force: bool = False) -> KeyReport:
    """``medkit convert <name>``: the released checkpoint → ``out`` (safetensors with our key names, the
    family in its metadata), after building and loading the model to prove it fits."""
    from medkit.finetune.external.base import CONVERTED_FORMAT, load_into
    from medkit.storage.files import save_tensors, sha256_file

    fam = family(name)
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

