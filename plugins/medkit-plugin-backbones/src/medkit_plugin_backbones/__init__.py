"""medkit backbones: the released comparison models (registration only; a family's module loads on use)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import BackboneSpec, hookimpl

MEDKIT_API_VERSION = "1.1"

#: name → (factory, one line for ``medkit plugins list``)
BACKBONES: dict[str, tuple[str, str]] = {
    "desd": ("medkit_plugin_backbones.desd:FAMILY", "DeSD: 3D ResNet-50, DINO-style self-distillation (yeerwen/DeSD)"),
    "pcrlv2-2d": ("medkit_plugin_backbones.pcrlv2:FAMILY_2D", "PCRLv2 on CheXpert: 2D ResNet-18 (RL4M/PCRLv2)"),
    "pcrlv2-3d": ("medkit_plugin_backbones.pcrlv2:FAMILY_3D", "PCRLv2 on LUNA: 3D encoder (RL4M/PCRLv2)"),
    "path-dino": ("medkit_plugin_backbones.path_dino:FAMILY",
                  "Path_DINO: ViT-S/16, DINO on TCGA pathology (lunit-io/benchmark-ssl-pathology)"),
    "unimiss": ("medkit_plugin_backbones.unimiss:FAMILY", "UniMiSS: 2D and 3D MiT encoder (YtongXie/UniMiSS-code)"),
}


@hookimpl
def medkit_register_backbones(register: Callable[[Any], None]) -> None:
    for name, (factory, summary) in BACKBONES.items():
        register(BackboneSpec(name, factory, summary=summary))
