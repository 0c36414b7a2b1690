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
import statistics
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
#: Without a checkout: the official ``Unified_Model``'s fp32 step (s, median), one core, batch 8, base
#: preset, CPU, measured interleaved with medkit's fp32 step on another machine (an AMX Xeon).
REFERENCE_S = {"2d": 3.11, "3d": 2.59}
REFERENCE_NOTE = ("official MedCoSS Unified_Model fp32 step: a recorded figure (one core, batch 8, a quiet "
                  "machine; 2D 3.11 s, 3D 2.59 s), not measured in this run (give --reference-repo with a "
                  "checkout of the authors' code to measure it here); 'x ref' means something only on a quiet "
                  "machine like that one")
#: The reference's step counts as like for like when its FLOPs are within this fraction of medkit's.
FLOP_TOLERANCE = 0.05


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
    except Exception as exc:
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


# -- the comparison bench/mae_step.py prints ---------------------------------------------------------
def reference_for(r: dict[str, Any], given: dict[str, float],
                  measured: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The reference's fp32 step for a bench row ``r``: measured in this run (``--reference-repo``: the
    fp32 worker of the same case timed it interleaved with medkit's step; its FLOPs against the row's),
    else a figure given with ``--reference-s``, else the recorded one where the row has its settings
    (base, batch 8, one thread, CPU), else ``None``."""
    if r["case"] in measured:
        m = measured[r["case"]]
        ratio = m["gflop_per_step"] / r["gflop_per_step"] if r["gflop_per_step"] else float("inf")
        return {"step_s": statistics.median(x["step_s"] for x in m["reps"]), "source": "measured in this run",
                "cpu_s": statistics.median(x["cpu_s"] for x in m["reps"]),
                "gflop_per_step": m["gflop_per_step"], "flop_ratio": ratio,
                "like_for_like": abs(ratio - 1.0) <= FLOP_TOLERANCE}
    if r["case"] in given:
        return {"step_s": given[r["case"]], "source": "given (--reference-s)"}
    recorded = (r["preset"], r["batch"], r["threads"], r["device"]) == ("base", 8, 1, "cpu")
    if recorded and r["case"] in REFERENCE_S:
        return {"step_s": REFERENCE_S[r["case"]], "source": "recorded"}
    return None


def describe_measured(rows: list[dict[str, Any]], measured: dict[str, dict[str, Any]]) -> list[str]:
    """One line per case whose reference was measured in this run: where from, its medians, and whether
    its FLOPs match medkit's (like for like)."""
    lines = []
    for case, m in measured.items():
        ref = next(r["reference"] for r in rows if r["case"] == case and r.get("reference"))
        lines.append(
            f"reference {case}: the official MedCoSS Unified_Model's fp32 step from {m['repo']}, timed in this run "
            f"interleaved with medkit's fp32 step ({len(m['reps'])} reps each, median {ref['step_s']:.3f} s wall, "
            f"{ref['cpu_s']:.3f} s CPU); {m['gflop_per_step']:.0f} GFLOP against medkit's "
            f"{ref['gflop_per_step'] / ref['flop_ratio']:.0f} ("
            + ("like for like" if ref["like_for_like"] else "NOT like for like: the FLOPs differ by more than "
               f"{FLOP_TOLERANCE:.0%}")
            + (f"; shims: {', '.join(m['shims'])}" if m["shims"] else "") + ")")
    return lines
