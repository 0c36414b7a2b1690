"""medkit: continual self-supervised pre-training of one universal encoder (MedCoSS). Importing it stays light."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence


def load_pretrained(ref: str | os.PathLike[str], *, with_heads: bool = True) -> Any:
    """Rebuild a checkpoint (``hf-hub:USER/NAME[@REV]``, ``local-dir:PATH`` or a run directory) with
    the installed plugins and load its weights; the model is returned in ``eval()`` mode.

    The convenience for notebooks and scripts: it hands :func:`medkit.hub.hub.load_pretrained` the
    installed plugin host, which the runtime itself never imports (docs/architecture.md). The result
    is a :class:`medkit.finetune.pretrained.PretrainedModel`: ``encoder``, ``heads`` and
    ``tokenizer_of`` as before, plus ``preprocess(path_or_array, modality)`` and
    ``embed(inputs, modality)``.
    """
    from medkit.finetune.backbones import pretrain_config
    from medkit.finetune.pretrained import PretrainedModel
    from medkit.hub.hub import load_pretrained as _load, resolve_checkpoint
    from medkit.registry import get_host

    host = get_host()
    root = resolve_checkpoint(ref)
    model = _load(ref, create=host.create, with_heads=with_heads, resolved=root)
    modality_cfg = pretrain_config(root).get("modality") or {}
    return PretrainedModel.wrap(model, create=host.create, modality_config=dict(modality_cfg),
                                source=os.fspath(ref))


@dataclass
class RunResult:
    """What :func:`run` and :func:`fine_tune` hand back: the run directory and the results."""

    run_dir: Path
    results: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """The run's model (:func:`load_pretrained` of ``run_dir``; pre-training runs only)."""
        return load_pretrained(self.run_dir)


def run(config: str | os.PathLike[str] | Mapping[str, Any] | None = None, *, modality: str | Sequence[str] = (),
        strategy: str | None = None, data: str | Sequence[str] | Mapping[str, str | None] = (),
        preset: str | None = None, max_steps: int | None = None, seed: int | None = None,
        overrides: Sequence[str] = (), run_dir: str | os.PathLike[str] | None = None,
        resume: str | os.PathLike[str] | None = None, from_ref: str | None = None) -> RunResult:
    """``medkit run`` from Python: the same composition, checks, engine and run directory.

    Args:
        config: a YAML file (a run's saved ``config.yaml`` or one's own) or a mapping of the same
            shape; the other arguments apply on top of it, as ``medkit run --config FILE`` does.
            Interpolations (``${...}``), YAML tags and instantiation keys are refused.
        modality, strategy, data, preset, max_steps, seed, overrides, run_dir, resume, from_ref: the
            command's options (``from_ref`` is ``--from``; ``overrides`` are ``KEY=VALUE`` strings).

    Returns:
        the run directory and the engine's results. Runs in this process (for several processes use
        the command with ``--nproc-per-node``); progress goes to the ``medkit`` loggers.
    """
    from medkit.engine.launch import RunOptions, execute_run, plan_run
    from medkit.registry import get_host

    is_file = isinstance(config, (str, os.PathLike))
    opts = RunOptions(modality=[modality] if isinstance(modality, str) else list(modality), strategy=strategy,
                      data=[data] if isinstance(data, str) else data, preset=preset, max_steps=max_steps,
                      seed=seed, overrides=list(overrides), run_dir=run_dir, resume=resume, from_ref=from_ref,
                      config_file=config if is_file else None,  # type: ignore[arg-type]  # narrowed by is_file
                      config_values=None if is_file or config is None else config)  # type: ignore[arg-type]
    host = get_host()
    cfg, target = plan_run(opts, host=host)
    return RunResult(target, execute_run(cfg, target, resume=bool(resume), host=host))


def fine_tune(*, task: str | None = None, modality: str | None = None, data: str | None = None,
              from_ref: str | None = None, scratch: bool = False, recipe: str | None = None,
              backbone: str = "medkit", preset: str | None = None, max_steps: int | None = None, seed: int = 0,
              overrides: Sequence[str] = (), run_dir: str | os.PathLike[str] | None = None,
              resume: str | os.PathLike[str] | None = None) -> RunResult:
    """``medkit finetune`` from Python (named ``fine_tune``: ``medkit.finetune`` is the subpackage).

    The arguments are the command's options (``from_ref`` is ``--from``); the composition, the
    trainer and the run directory are the command's. Returns the run directory and the results
    (``test`` metrics, ``best_step``).
    """
    from medkit.finetune.config import FinetuneSelection
    from medkit.finetune.launch import execute_finetune, plan_finetune
    from medkit.registry import get_host

    host = get_host()
    asked = any((task, modality, data, from_ref, scratch, recipe, overrides, max_steps is not None))
    sel = None if resume and not asked else FinetuneSelection(
        task=task, modality=modality, data=data, source=from_ref, scratch=scratch, recipe=recipe,
        backbone=backbone, preset=preset, max_steps=max_steps, seed=seed, overrides=list(overrides))
    cfg, target = plan_finetune(sel, host=host, run_dir=run_dir, resume=resume)
    return RunResult(target, execute_finetune(cfg, target, resume=bool(resume), host=host))
