"""How many DataLoader workers each rank gets: ``trainer.num_workers=auto`` resolved from the machine."""

from __future__ import annotations

import logging
import os
from typing import Any

from medkit.api.errors import ConfigError

log = logging.getLogger(__name__)

#: The value of ``trainer.num_workers`` that is resolved from the machine (the default).
AUTO = "auto"
#: ``auto`` never gives a rank more workers than this: past it, a loader feeding one device is
#: rarely the bottleneck and every worker holds its own copy of the datasets' caches.
MAX_AUTO_WORKERS = 8
#: An environment variable that, when set, is what ``auto`` resolves to (CI, shared machines, tests).
ENV = "MEDKIT_NUM_WORKERS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a Slurm/cgroup allocation gives it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_ranks() -> int:
    """Training processes on this node (``LOCAL_WORLD_SIZE``, which torchrun sets; 1 otherwise)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def resolve_num_workers(value: Any, *, cpus: int | None = None, ranks: int | None = None) -> tuple[int, str]:
    """``(workers per rank, why)`` for a ``trainer.num_workers`` value.

    An integer is taken as it is. ``auto`` is ``$MEDKIT_NUM_WORKERS`` when that is set, else
    ``min(8, CPUs per rank - 1)`` (one core per rank stays with the training loop), and 0 (load in
    the main process) when that is not positive.

    Raises:
        ConfigError: a value that is neither a non-negative integer nor ``auto``.
    """
    if isinstance(value, str) and value.strip().lower() == AUTO:
        env = os.environ.get(ENV, "").strip()
        if env:
            try:
                n = int(env)
            except ValueError as exc:
                raise ConfigError(f"${ENV}={env!r}: expected a number of DataLoader workers (>= 0)") from exc
            return max(0, n), f"trainer.num_workers=auto, set by ${ENV}"
        cpus = available_cpus() if cpus is None else int(cpus)
        ranks = local_ranks() if ranks is None else int(ranks)
        per_rank = cpus // ranks
        n = max(0, min(MAX_AUTO_WORKERS, per_rank - 1))
        why = (f"trainer.num_workers=auto: {cpus} CPUs available to this process, {ranks} rank(s) on this "
               f"node, so min({MAX_AUTO_WORKERS}, {per_rank} - 1) with one core per rank left to the "
               f"training loop")
        if n == 0:
            why += "; samples load in the main process"
        return n, why
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"trainer.num_workers={value!r}: expected an integer >= 0 or 'auto' "
                          f"(one worker per spare core, up to {MAX_AUTO_WORKERS})")
    return int(value), "set by trainer.num_workers"


def num_workers(value: Any) -> int:
    """:func:`resolve_num_workers`, with the log line that states the number and why."""
    n, why = resolve_num_workers(value)
    log.info("DataLoader workers per rank: %d (%s)", n, why)
    return n
