"""The official MedCoSS pre-training step, built from a user's own checkout of the authors' code.

:mod:`bench/mae_step.py <mae_step>` times it beside medkit's step. Nothing here is copied from the authors'
code and it is no dependency of medkit: the model, its loss and its gradient scaler are imported from
the folder given (``git clone https://github.com/yeerwen/MedCoSS``), put first on ``sys.path``.

What a step is follows their pre-training script (``main_pretrain_single_modal.py`` and
``engine_pretrain.py``; ``main_pretrain_medcoss.py`` builds the same model):

- the model: ``Unified_Model(now_1D_input_size=(112, 1), now_2D_input_size=(224, 224),
  now_3D_input_size=(16, 192, 192), norm_pix_loss=True)`` (their ``run_ssl.sh`` passes
  ``--norm_pix_loss``), in ``train()`` mode;
- the optimizer: ``torch.optim.AdamW(add_weight_decay(model, 0.05), lr, betas=(0.9, 0.95))``, torch's
  default implementation for the device (the per-parameter loop on CPU);
- a step: ``(loss, _), ... = model({"data": x, "modality": "2D image" | "3D image", ...},
  mask_ratio)``, ``loss.item()``, then their ``NativeScalerWithGradNormCount``: backward, unscale,
  the gradient norm, ``optimizer.step()``, then ``optimizer.zero_grad()``. Their loop wraps the forward
  in ``torch.cuda.amp.autocast()``, a no-op on CPU; this fp32 step leaves it out.

Shims, only for names today's libraries no longer have (each is installed only where the name is
missing, never over a real module):

- ``torch._six`` (removed in torch 2.0): their ``util/misc.py`` imports ``inf`` from it;
  a module holding ``math.inf`` stands in.
- ``transformers.models.bert.modeling_bert.BertPredictionHeadTransform``: ``model/Unimodel.py``
  imports it and redefines the class on the next lines, so it is never used; where transformers is
  not installed an empty module with a placeholder class stands in.
- timm ≥ 1.0 renamed ``timm.optim.optim_factory.add_weight_decay`` to
  ``timm.optim.param_groups_weight_decay`` (same rule: no decay for biases and 1-D parameters); the
  optimizer is built with whichever the installed timm has.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from pathlib import Path
from typing import Any, Callable

from medkit.api.errors import MedkitError

#: Files of the authors' repository the reference step needs, and a line each must contain.
REQUIRED: dict[str, str] = {
    "model/Unimodel.py": "class Unified_Model(",
    "model/Base_module.py": "class VideoBaseEmbedding(",
    "util/misc.py": "class NativeScalerWithGradNormCount",
    "main_pretrain_single_modal.py": "Unified_Model(",
}
#: case -> the ``modality`` and ``task`` their engine passes with the batch
MODALITIES: dict[str, tuple[str, str]] = {"2d": ("2D image", "2D_xray"), "3d": ("3D image", "3D_CT")}
UPSTREAM = "https://github.com/yeerwen/MedCoSS"


class ReferenceRepoError(MedkitError):
    """The folder given as the reference repository is not a checkout of the authors' code."""


def check_repo(path: str | Path) -> Path:
    """``path`` resolved, once it holds the files of :data:`REQUIRED` with their defining lines.

    Raises:
        ReferenceRepoError: naming the folder and the first file that is missing or not theirs.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ReferenceRepoError(f"--reference-repo {path}: not a folder; give a checkout of the authors' "
                                 f"code ({UPSTREAM})")
    for rel, needle in REQUIRED.items():
        file = root / rel
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            raise ReferenceRepoError(f"--reference-repo {path}: no {rel}, so this is not a checkout of the "
                                     f"official MedCoSS code ({UPSTREAM})") from None
        if needle not in text:
            raise ReferenceRepoError(f"--reference-repo {path}: {rel} has no {needle.rstrip('(')!r}, so this "
                                     f"is not the official MedCoSS code ({UPSTREAM})")
    return root


def _install_shims() -> list[str]:
    """Stand-ins for the names their code imports that today's libraries removed; returns their names."""
    installed = []
    try:
        importlib.import_module("torch._six")
    except ImportError:
        six = types.ModuleType("torch._six")
        six.inf = math.inf  # type: ignore[attr-defined]
        sys.modules["torch._six"] = six
        installed.append("torch._six")
    try:
        importlib.import_module("transformers.models.bert.modeling_bert")
    except ImportError:
        names = ("transformers", "transformers.models", "transformers.models.bert",
                 "transformers.models.bert.modeling_bert")
        for name in names:
            sys.modules.setdefault(name, types.ModuleType(name))
        # imported by model/Unimodel.py, then shadowed by its own class of that name
        sys.modules[names[-1]].BertPredictionHeadTransform = type(  # type: ignore[attr-defined]
            "BertPredictionHeadTransform", (), {})
        installed.append("transformers.models.bert.modeling_bert")
    return installed


def load_reference(repo: str | Path) -> tuple[Any, Any, list[str]]:
    """``(Unified_Model, NativeScalerWithGradNormCount, shims)`` imported from the checkout ``repo``."""
    root = check_repo(repo)
    shims = _install_shims()
    for name in ("model", "model.Unimodel", "model.Base_module", "util", "util.misc"):
        sys.modules.pop(name, None)  # a same-named module imported earlier is not theirs
    sys.path.insert(0, str(root))
    try:
        unimodel = importlib.import_module("model.Unimodel")
        misc = importlib.import_module("util.misc")
    except Exception as exc:  # noqa: BLE001 - any import failure of their code is reported as one line
        raise ReferenceRepoError(f"--reference-repo {repo}: importing the authors' model failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(root))
    origin = Path(getattr(unimodel, "__file__", "") or "").resolve()
    if root not in origin.parents:
        raise ReferenceRepoError(f"--reference-repo {repo}: model.Unimodel was imported from {origin}, "
                                 f"not from this folder")
    return unimodel.Unified_Model, misc.NativeScalerWithGradNormCount, shims


def weight_decay_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Their ``optim_factory.add_weight_decay(model, weight_decay)``, through the installed timm."""
    import timm.optim as topt

    add = getattr(topt, "param_groups_weight_decay", None)
    if add is None:  # timm < 0.9
        from timm.optim import optim_factory

        add = optim_factory.add_weight_decay
    return list(add(model, weight_decay))


def build_reference_step(repo: str | Path, case: str, inputs: Any, mask_ratio: float,
                         lr: float = 1.5e-4) -> tuple[Callable[[], float], Any, dict[str, Any]]:
    """A function running one reference training step on ``inputs`` (returns the loss), the model,
    and facts for the JSON (shims, parameter counts)."""
    import warnings

    import torch

    unified_model, scaler_cls, shims = load_reference(repo)
    model = unified_model(now_1D_input_size=(112, 1), now_2D_input_size=(224, 224),
                          now_3D_input_size=(16, 192, 192), norm_pix_loss=True).to(inputs.device).train()
    optimizer = torch.optim.AdamW(weight_decay_groups(model, 0.05), lr=lr, betas=(0.9, 0.95))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "GradScaler is enabled, but CUDA is not available. Disabling."
        scaler = scaler_cls()
    modality, task = MODALITIES[case]
    params = list(model.parameters())

    def step() -> float:
        samples = {"data": inputs, "modality": modality, "task": task}
        (loss, _), _, _, _ = model(samples.copy(), mask_ratio=mask_ratio)
        value = loss.item()
        scaler(loss, optimizer, parameters=params, update_grad=True)
        optimizer.zero_grad()
        return value

    facts = {"repo": str(check_repo(repo)), "shims": shims, "optimizer": "torch.optim.AdamW (default implementation)",
             "params": sum(p.numel() for p in params)}
    return step, model, facts
