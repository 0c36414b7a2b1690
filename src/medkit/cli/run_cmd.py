"""``medkit run``: continual pre-training over the selected modalities, one stage each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from medkit.cli.common import default_run_dir, make_reporter, make_selection, selection_options


def _argv_without(argv: list[str], option: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == option:
            skip = True
            continue
        if arg.startswith(option + "="):
            continue
        out.append(arg)
    return out


def _relaunch(nproc: int, run_dir: str) -> None:
    """Re-run this very command under ``torch.distributed.run`` with ``nproc`` processes."""
    args = _argv_without(_argv_without(sys.argv[1:], "--nproc-per-node"), "--run-dir")
    if "run" not in args:
        raise click.UsageError("--nproc-per-node must be given to `medkit run`")
    idx = args.index("run")
    args = args[: idx + 1] + ["--run-dir", run_dir] + args[idx + 1:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "medkit.cli.main", *args]
    env = dict(os.environ, MEDKIT_LAUNCHED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    code = subprocess.call(cmd, env=env)
    if code != 0:
        from medkit.api.errors import MedkitError

        raise MedkitError(f"the distributed run exited with status {code}; see the messages above")


@click.command()
@selection_options
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/<time>-<strategy>-<modalities>).")
@click.option("--resume", "resume", type=click.Path(file_okay=False, exists=True), default=None,
              help="Continue an interrupted run directory exactly where its last checkpoint left it.")
@click.option("--from", "from_ref", default=None,
              help="Continue a finished model with new stages: a run directory, local-dir:PATH or "
                   "hf-hub:USER/NAME[@REV].")
@click.option("--nproc-per-node", type=int, default=1, show_default=True,
              help="Processes on this machine (re-launches itself through torch.distributed.run).")
def run(modality: tuple[str, ...], strategy: str, data: tuple[str, ...], preset: str,
        max_steps: int | None, seed: int, overrides: tuple[str, ...], run_dir: str | None,
        resume: str | None, from_ref: str | None, nproc_per_node: int) -> None:
    """Pre-train the shared encoder, one stage per modality (OVERRIDES are KEY=VALUE, e.g.
    optim.lr=1e-4 strategy.buffer_ratio=0.1).

    \b
    Examples:
      medkit run --modality ct --strategy sequential --preset tiny --max-steps 20
      medkit run --modality report,xray,ct --strategy rehearsal --data ct=/data/ct
      medkit run --resume runs/my-run
      medkit run --from runs/my-run --modality pathology --strategy rehearsal
    """
    from medkit.config.compose import compose
    from medkit.engine.engine import Engine, load_config
    from medkit.api.errors import ConfigError

    if resume and from_ref:
        raise ConfigError("--resume and --from do not mix: --resume continues an interrupted run, --from "
                          "adds stages to a finished one")
    if resume:
        if modality or overrides or data:
            raise ConfigError(f"--resume continues {resume} exactly as its config.yaml says; drop "
                              f"--modality/--data/overrides")
        cfg = load_config(Path(resume))
        target = Path(resume)
    elif from_ref:
        from medkit.engine.continuation import compose_continuation
        from medkit.hub.hub import resolve_checkpoint

        sel = make_selection(modality, strategy, data, preset, max_steps, seed, overrides)
        cfg = compose_continuation(from_ref, resolve_checkpoint(from_ref), sel)
        target = Path(run_dir or default_run_dir(strategy, sel.modalities))
    else:
        cfg = compose(make_selection(modality, strategy, data, preset, max_steps, seed, overrides))
        target = Path(run_dir or default_run_dir(strategy, cfg["run"]["modalities"]))
    if nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        _relaunch(nproc_per_node, str(target))
        click.echo(f"run directory: {target}")
        return
    from medkit.registry import get_host

    reporter = make_reporter(int(cfg["trainer"].get("log_every", 10)))
    Engine(cfg, target, components=get_host(), reporter=reporter, resume=bool(resume)).run()
    if int(os.environ.get("RANK", "0")) == 0 and not os.environ.get("MEDKIT_LAUNCHED"):
        click.echo(f"run directory: {target}")
