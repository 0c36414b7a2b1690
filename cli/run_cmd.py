"""``medkit run``: continual pre-training over the selected modalities, one stage each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from medkit.cli.common import make_reporter, selection_options


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


LAUNCH_OPTIONS = ("--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--run-dir")


def _relaunch(nproc: int, run_dir: str, *, nnodes: int = 1, node_rank: int = 0, master_addr: str = "127.0.0.1",
              master_port: int = 29500) -> None:
    """Re-run this very command under ``torch.distributed.run`` (torchrun): ``nproc`` processes here,
    and with ``nnodes > 1`` one of ``nnodes`` machines meeting at ``master_addr:master_port`` through
    torch's c10d rendezvous (every node runs the same command with its own ``--node-rank``)."""
    args = sys.argv[1:]
    for option in LAUNCH_OPTIONS:
        args = _argv_without(args, option)
    if "run" not in args:
        raise click.UsageError("--nproc-per-node/--nnodes must be given to `medkit run`")
    idx = args.index("run")
    args = args[: idx + 1] + ["--run-dir", run_dir] + args[idx + 1:]
    if nnodes > 1:
        import hashlib

        rdzv_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]
        launch = [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d",
                  f"--rdzv-endpoint={master_addr}:{master_port}", f"--rdzv-id={rdzv_id}"]
    else:
        launch = ["--standalone"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, f"--nproc-per-node={nproc}",
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
@click.option("--nnodes", type=int, default=1, show_default=True,
              help="Machines taking part; run the same command on each with its own --node-rank.")
@click.option("--node-rank", type=int, default=0, show_default=True, help="This machine's index (0 … nnodes-1).")
@click.option("--master-addr", default="127.0.0.1", show_default=True,
              help="Address of the rendezvous (a machine every node reaches; c10d rendezvous).")
@click.option("--master-port", type=int, default=29500, show_default=True, help="Port of the rendezvous.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A YAML config (a run's saved config.yaml, or your own) to start from; the options and "
                   "OVERRIDES above apply on top of it. Interpolations (${...}) and tags are refused.")
def run(modality: tuple[str, ...], strategy: str, data: tuple[str, ...], preset: str,
        max_steps: int | None, seed: int, overrides: tuple[str, ...], run_dir: str | None,
        resume: str | None, from_ref: str | None, nproc_per_node: int, nnodes: int, node_rank: int,
        master_addr: str, master_port: int, config_file: str | None) -> None:
    """Pre-train the shared encoder, one stage per modality (OVERRIDES are KEY=VALUE, e.g.
    optim.lr=1e-4 strategy.buffer_ratio=0.1).

    With --resume only the safe overrides are accepted: optim.lr, optim.min_lr, trainer.max_steps
    (also --max-steps), trainer.checkpoint_every, trainer.num_workers, trainer.log_every,
    trainer.eval_batches.

    \b
    Examples:
      medkit run --modality ct --strategy sequential --preset tiny --max-steps 20
      medkit run --modality report,xray,ct --strategy rehearsal --data ct=/data/ct
      medkit run --resume runs/my-run
      medkit run --resume runs/my-run optim.lr=5e-5 trainer.max_steps=2000
      medkit run --from runs/my-run --modality pathology --strategy rehearsal
      medkit run --config runs/my-run/config.yaml --run-dir runs/again trainer.max_steps=50
      medkit run --modality ct --nproc-per-node 4 --nnodes 2 --node-rank 0 --master-addr node0 --run-dir /shared/r
    """
    from medkit.engine.launch import RunOptions, execute_run, plan_run
    from medkit.api.errors import ConfigError
    from medkit.registry import get_host

    ctx = click.get_current_context()

    def given(name: str, value: Any) -> Any:
        """``value`` where the command line gave it, else ``None`` (the --config file or the default)."""
        return value if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE else None

    opts = RunOptions(modality=modality, strategy=given("strategy", strategy), data=data,
                      preset=given("preset", preset), max_steps=max_steps, seed=given("seed", seed),
                      overrides=overrides, run_dir=run_dir, resume=resume, from_ref=from_ref,
                      config_file=config_file)
    cfg, target = plan_run(opts, host=get_host())
    if (nproc_per_node > 1 or nnodes > 1) and "WORLD_SIZE" not in os.environ:
        if nnodes > 1 and not (run_dir or resume):
            raise ConfigError("--nnodes > 1: give every node the same --run-dir (on storage all nodes share)")
        _relaunch(nproc_per_node, str(target), nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                  master_port=master_port)
        click.echo(f"run directory: {target}")
        return
    from medkit.config.typed import trainer_config

    reporter = make_reporter(trainer_config(cfg).log_every)
    execute_run(cfg, target, resume=bool(resume), host=get_host(), reporter=reporter)
    if int(os.environ.get("RANK", "0")) == 0 and not os.environ.get("MEDKIT_LAUNCHED"):
        click.echo(f"run directory: {target}")
