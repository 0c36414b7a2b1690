"""medkit tokenizers: registration only (the modules are imported lazily by their factories)."""

from __future__ import annotations

from typing import Any, Callable

from medkit.api import TokenizerSpec, hookimpl

MEDKIT_API_VERSION = "1.4"


@hookimpl
def medkit_register_tokenizers(register: Callable[[Any], None]) -> None:
    # Image patch tokenizers (patch.py).
    register(TokenizerSpec("patch_2d", "medkit_plugin_tokenizers.patch:Patch2D", context=("embed_dim",),
                           summary="16x16 patches of [C, H, W] images, grid-aware positions",
                           meta={"dims": 2}))
    register(TokenizerSpec("patch_3d", "medkit_plugin_tokenizers.patch:Patch3D", context=("embed_dim",),
                           summary="16x16x16 patches of [C, D, H, W] volumes, grid-aware positions",
                           meta={"dims": 3}))
    # Text tokenizer (text.py).
    register(TokenizerSpec("text_1d", "medkit_plugin_tokenizers.text:TextTokenizer", context=("embed_dim",),
                           summary="word-pieces (HF tokenizers) + learned positions, [CLS] first, padding mask",
                           meta={"dims": 1}))


@hookimpl
def medkit_register_commands(cli: Any) -> None:
    # ``medkit tokenizer train``: click and the command module are imported only when the CLI starts.
    from medkit_plugin_tokenizers.commands import tokenizer_group

    cli.add_command(tokenizer_group)
