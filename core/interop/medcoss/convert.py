"""``medkit convert medcoss``: the official MedCoSS checkpoint → a medkit run directory
whose legacy encoder (``encoder.legacy=true``) gives the official model's features."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from medkit.storage import files as ck
from medkit.api.components import Components, Create
from medkit.storage.torchfile import load_restricted, unsafe_globals
from medkit.storage.torchfile import qualname as _qualname
from medkit.api.errors import CheckpointError, ConfigError
from medkit.interop.medcoss.keys import TOKENIZERS, Conversion, Layout, official_to_medkit

if TYPE_CHECKING:
    from medkit.models.encoder import UniversalEncoder

log = logging.getLogger(__name__)

#: The official stage order: the modalities a converted run holds, in this order.
OFFICIAL_STAGES = ("report", "xray", "ct", "mri", "pathology")
#: The only class an official checkpoint pickles besides tensors, numbers and containers (its ``args``).
ALLOWED_GLOBALS: tuple[type, ...] = (argparse.Namespace,)
SOURCE_KIND = "medcoss-official"


@dataclass
class ConversionReport:
    """What :func:`convert_medcoss` wrote and which official tensors went where."""

    run_dir: Path
    modalities: list[str]
    sha256: str
    epoch: int | None
    official_keys: int
    medkit_keys: int
    converted: list[str] = field(default_factory=list)  # official keys used
    dropped: dict[str, str] = field(default_factory=dict)  # official key → why not
    folded: dict[str, str] = field(default_factory=dict)  # official key → medkit key it went into
    fresh: list[str] = field(default_factory=list)  # medkit keys left at their initialisation
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        return out


# -- reading the official file ------------------------------------------------------------------
def _refusal(path: Path, name: str) -> str:
    return (f"{path}: refusing to load it: the file pickles {name}, which an official MedCoSS checkpoint does "
            f"not contain (tensors, numbers and one {', '.join(_qualname(c) for c in ALLOWED_GLOBALS)}); "
            f"this file is not an official MedCoSS checkpoint, and medkit never unpickles other objects")


def _unsafe_globals(path: Path) -> list[str]:
    """Classes/functions the file's pickle names outside torch's weights-only allow-list (torch >= 2.5)."""
    return unsafe_globals(path)


def load_official(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``model`` state dict of an official checkpoint, read with ``weights_only=True``.

    Only :data:`ALLOWED_GLOBALS` (the ``args`` Namespace) are allowed besides what torch's
    weights-only unpickler accepts; any other pickled class is refused by name.

    Returns:
        ``(state, info)``; ``info`` has ``epoch`` and the file's top-level ``entries``.

    Raises:
        CheckpointError: missing file, another pickled class, not a torch file, no ``model`` entry.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give the official checkpoint-299.pth")
    obj = load_restricted(path, ALLOWED_GLOBALS, refusal=lambda name: _refusal(path, name),
                          unreadable=lambda why: f"{path} is not a readable torch checkpoint ({why}); give the "
                                                 f"official MedCoSS checkpoint-299.pth",
                          scan=lambda p: _unsafe_globals(p))
    info: dict[str, Any] = {"epoch": None, "entries": []}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state = obj["model"]
        info["entries"] = sorted(str(k) for k in obj)
        epoch = obj.get("epoch")
        info["epoch"] = int(epoch) if isinstance(epoch, int) else None
    elif isinstance(obj, dict) and any(str(k).startswith("fused_encoder.") for k in obj):
        state = obj  # a bare state dict
    else:
        raise CheckpointError(f"{path} has no 'model' entry; an official MedCoSS checkpoint is a dict with "
                              f"'model', 'optimizer', 'epoch', 'scaler' and 'args'")
    keys = [str(k) for k in state]
    if keys and all(k.startswith("module.") for k in keys):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state), info


# -- the run config ----------------------------------------------------------------------------
def converted_config(modalities: Sequence[str] | None = None, *, components: Components,
                     vocab_file: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The run config of a converted checkpoint: preset ``base``, ``encoder.legacy=true`` and every
    tokenizer in legacy mode, for the official modalities asked for (default: those installed).

    Returns:
        ``(config, notes)``.
    """
    from medkit.config.compose import Selection, compose

    host = components
    installed = set(host.names("modality"))
    notes: list[str] = []
    if modalities:
        chosen = list(dict.fromkeys(modalities))
        unknown = [m for m in chosen if m not in OFFICIAL_STAGES]
        if unknown:
            raise ConfigError(f"--modality {unknown[0]}: the official MedCoSS model was trained on "
                              f"{', '.join(OFFICIAL_STAGES)}")
        absent = [m for m in chosen if m not in installed]
        if absent:
            raise ConfigError(f"--modality {absent[0]}: no such modality is installed; "
                              f"pip install medkit-plugin-{absent[0]}")
        chosen = [m for m in OFFICIAL_STAGES if m in chosen]
    else:
        chosen = [m for m in OFFICIAL_STAGES if m in installed]
        for m in OFFICIAL_STAGES:
            if m not in installed:
                notes.append(f"modality {m} is not installed (pip install medkit-plugin-{m}); it is left out")
    if not chosen:
        raise ConfigError("none of the MedCoSS modalities (" + ", ".join(OFFICIAL_STAGES) + ") is installed; "
                          "pip install medkit-plugin-xray (or another) and convert again")
    strategy = "rehearsal" if "rehearsal" in host.names("strategy") else "sequential"
    cfg = compose(Selection(modalities=chosen, strategy=strategy, preset="base"), host=host)
    cfg["encoder"]["legacy"] = True
    for m in chosen:
        name = cfg["run"]["uses"][m]["tokenizer"]
        params = cfg["tokenizer"][name]
        if name not in TOKENIZERS.values() or "legacy" not in params:
            raise ConfigError(f"modality {m} uses tokenizer {name!r}, which has no legacy mode; the official "
                              f"weights need {', '.join(TOKENIZERS.values())} from medkit-plugin-tokenizers")
        params["legacy"] = True
    if "text_1d" in cfg["tokenizer"]:
        if vocab_file:
            vocab = Path(vocab_file).expanduser().resolve()
            if not vocab.is_file():
                raise ConfigError(f"--vocab {vocab_file}: no such file; give Bio_ClinicalBERT's vocab.txt")
            cfg["tokenizer"]["text_1d"]["vocab_file"] = str(vocab)
        else:
            notes.append("text: no --vocab given, so report text is tokenized with medkit's built-in vocabulary, "
                         "whose ids are not the official model's; pass --vocab Bio_ClinicalBERT/vocab.txt to get "
                         "the official text features")
    elif vocab_file:
        notes.append("--vocab is ignored: the run has no report modality")
    return cfg, notes


def _build_head(cfg: dict[str, Any], modality: str, encoder: UniversalEncoder, create: Create) -> torch.nn.Module:
    """The modality's pretext head, on the meta device when its constructor allows it."""
    from medkit.models.build import build_head

    try:
        with torch.device("meta"):
            return build_head(cfg, modality, encoder, create=create)
    except NotImplementedError:  # e.g. torch.nonzero has no meta kernel: build it for real
        return build_head(cfg, modality, encoder, create=create)


# -- writing -----------------------------------------------------------------------------------
def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Stream ``tensors`` into a safetensors file through a temp file, fsync and rename (no in-memory
    copy of the whole file: the converted model is about 1 GB)."""
    from safetensors.torch import save_file

    ck.atomic_write_file(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _check_target(out: Path, force: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another OUT_DIR")
    if not force:
        raise ConfigError(f"{out} exists and is not empty; choose another OUT_DIR or pass --force to replace it")
    if not ((out / "manifest.json").exists() or (out / "config.json").exists()):
        raise ConfigError(f"{out} is not a medkit run directory; --force only replaces one, choose another OUT_DIR")


def convert_medcoss(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                    vocab_file: str | None = None, modalities: Sequence[str] | None = None,
                    force: bool = False, components: Components, to: str = "legacy") -> ConversionReport:
    """Convert the official MedCoSS checkpoint into a medkit run directory.

    Writes ``config.yaml`` (preset ``base``, ``encoder.legacy=true``, legacy tokenizers),
    ``config.json``, ``model.safetensors`` (encoder, tokenizers and the pretext heads the official
    tensors fit), ``tokenizers/<name>/`` and ``manifest.json`` (source path and sha256, what was
    converted, dropped, folded or left at its initialisation). The folder is written next to
    ``out_dir`` and moved into place when complete.

    Args:
        checkpoint: the official ``checkpoint-299.pth``.
        out_dir: the run directory to create.
        vocab_file: Bio_ClinicalBERT's ``vocab.txt`` (text ids as the official model's).
        modalities: a subset of :data:`OFFICIAL_STAGES` (default: every installed one).
        force: replace ``out_dir`` if it is a medkit run directory.
        components: the installed plugins (``medkit.registry.get_host()``).
        to: ``"legacy"`` (the official layout, ``encoder.legacy=true``) or ``"native"`` (positions
            and the type row folded into the corrected layout, :mod:`medkit.interop.medcoss.native`:
            the same eval-mode image features, to float rounding).
    """
    if to not in ("legacy", "native"):
        raise ConfigError(f"convert medcoss --to {to!r}: choose legacy or native")
    if to == "native":
        from medkit.interop.medcoss.native import write_native

        out = Path(out_dir).expanduser()
        _check_target(out, force)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.legacy.", dir=str(out.parent)))
        try:
            report = convert_medcoss(checkpoint, tmp / "legacy", vocab_file=vocab_file, modalities=modalities,
                                     components=components)
            report.folded.update({f"legacy {k}": v for k, v in
                                  write_native(tmp / "legacy", out, components=components).items()})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        report.run_dir = out
        report.notes.append("--to native: image features equal the legacy model's in eval mode at each patch "
                            "tokenizer's base_size grid; text uses the corrected (bidirectional) attention")
        return report
    from medkit.config.compose import config_hash, to_yaml
    from medkit.engine.checkpoint import package_versions
    from medkit.models.build import architecture, build_head, build_model

    src = Path(checkpoint).expanduser()
    out = Path(out_dir).expanduser()
    _check_target(out, force)
    state, info = load_official(src)
    cfg, notes = converted_config(modalities, vocab_file=vocab_file, components=components)
    chosen = list(cfg["run"]["modalities"])
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        encoder = build_model(cfg, create=components.create, with_heads=False).encoder
    heads = {m: _build_head(cfg, m, encoder, components.create) for m in chosen}
    expected: dict[str, tuple[int, ...]] = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    for m, head in heads.items():
        expected.update({f"heads.{m}.{k}": tuple(v.shape) for k, v in head.state_dict().items()})
    conv: Conversion = official_to_medkit(state, Layout.from_config(cfg), expected, source=str(src))
    tensors = {k: conv.tensors[k] for k in expected if k in conv.tensors}
    for key in conv.missing:  # heads the checkpoint cannot fill keep medkit's initialisation
        m, _, sub = key[len("heads."):].partition(".")
        if heads[m].state_dict()[sub].is_meta:
            heads[m] = build_head(cfg, m, encoder, create=components.create)  # real tensors, initialised on the CPU
        tensors[key] = heads[m].state_dict()[sub].detach().clone()
    tensors = {k: tensors[k] for k in expected}
    log.debug("converted %d official tensors into %d medkit tensors", len(conv.converted), len(tensors))

    with ck.staged_directory(out) as staging:
        _write_safetensors(staging / "model.safetensors", tensors, {"format": "medkit-1", "source": SOURCE_KIND})
        ck.atomic_write_text(staging / "config.yaml", to_yaml(cfg))
        ck.atomic_write_json(staging / "config.json", architecture(cfg))
        for name, tok in encoder.tokenizers.items():
            saver = getattr(tok, "save_pretrained", None)
            if callable(saver):
                saver(staging / "tokenizers" / name)
        sha = ck.sha256_file(src)
        report = ConversionReport(run_dir=out, modalities=chosen, sha256=sha, epoch=info["epoch"],
                                  official_keys=len(state), medkit_keys=len(tensors), converted=conv.converted,
                                  dropped=dict(conv.dropped), folded=dict(conv.folded), fresh=list(conv.missing),
                                  notes=notes)
        stages = [{"index": i + 1, "modalities": [m], "status": "done", "steps": 0, "source": SOURCE_KIND}
                  for i, m in enumerate(chosen)]
        manifest = {
            "format": 1, "strategy": cfg["run"]["strategy"], "from": None, "modalities": chosen,
            "stages": stages, "stages_done": [[m] for m in chosen],
            "current": {"stage": len(chosen), "step": 0}, "finished": True,
            "config_hash": config_hash(cfg), "versions": package_versions(components.distributions()),
            "data": {m: None for m in chosen},
            "seed": 0, "world_size": 1, "converted_by": "medkit convert medcoss",
            "files": {rel: ck.sha256_file(staging / rel)
                      for rel in ("model.safetensors", "config.json", "config.yaml")},
            "source": {"kind": SOURCE_KIND, "checkpoint": str(src.resolve()), "sha256": sha, "epoch": info["epoch"],
                       "entries": info["entries"], "official_keys": len(state), "converted": conv.converted,
                       "dropped": conv.dropped, "folded": conv.folded, "fresh": conv.missing, "notes": notes},
        }
        ck.atomic_write_json(staging / "manifest.json", manifest)
    return report

