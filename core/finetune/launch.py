"""The one way a fine-tuning run starts: ``medkit finetune`` and :func:`medkit.fine_tune` both call
:func:`plan_finetune` then :func:`execute_finetune`, so both write the same run directory."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from medkit.api.errors import ConfigError
from medkit.finetune.config import FinetuneSelection


def plan_finetune(sel: FinetuneSelection | None, *, host: Any, run_dir: str | os.PathLike[str] | None = None,
                  resume: str | os.PathLike[str] | None = None) -> tuple[dict[str, Any], Path]:
    """The resolved config of a fine-tuning run and its run directory; nothing is written.

    Args:
        sel: what was asked (``None`` with ``resume``).
        host: the plugin host (the caller builds it; the runtime never does).
        run_dir: where to write (default ``runs/finetune-<time>-<task>-<modality>``).
        resume: an interrupted fine-tuning run directory, continued exactly as its ``config.yaml`` says.
    """
    from medkit.engine.engine import load_config
    from medkit.finetune.config import compose_finetune

    if resume:
        if sel is not None:
            raise ConfigError(f"--resume continues {resume} exactly as its config.yaml says; drop the other "
                              f"options")
        return load_config(Path(resume)), Path(resume)
    if sel is None:
        raise ConfigError("say what to fine-tune (a task, a recipe or --resume)")
    cfg = compose_finetune(sel, host=host, require_source=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cfg, Path(run_dir or f"runs/finetune-{stamp}-{cfg['run']['task']}-{cfg['run']['modality']}")


def execute_finetune(cfg: dict[str, Any], run_dir: Path, *, resume: bool, host: Any,
                     reporter: Any = None) -> dict[str, Any]:
    """Fine-tune (or resume) ``cfg`` in ``run_dir``; returns the trainer's results (``test`` metrics,
    ``best_step``, ``already_finished`` on a resume of a finished run)."""
    from medkit.finetune.config import FinetuneSettings
    from medkit.finetune.trainer import Finetuner

    if reporter is None:
        from medkit.api.progress import LogReporter

        reporter = LogReporter(every=FinetuneSettings.of(cfg).trainer.log_every)
    return Finetuner(cfg, Path(run_dir), reporter=reporter, resume=resume, components=host).run()
