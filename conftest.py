"""Test-session settings shared by the host's and every plugin's tests.

One thread per process: float reductions split across threads are summed in another order when the
thread count differs, and many tests compare a run with a resumed or concurrent one bit for bit (in
this process and in the subprocesses they start, which inherit the variable).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

# pytest-xdist runs the suite in several worker processes (one file per worker: --dist loadfile); each
# worker generates the built-in demo data in a folder of its own, so no two processes write one folder.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and os.environ.get("MEDKIT_DEMO_DIR"):
    os.environ["MEDKIT_DEMO_DIR"] = os.path.join(os.environ["MEDKIT_DEMO_DIR"], _WORKER)
os.environ.setdefault("MKL_NUM_THREADS", "1")
# trainer.num_workers=auto (the default) would give every test run a worker process per spare core:
# tests load in the main process unless they ask for workers (medkit.engine.workers reads this)
os.environ.setdefault("MEDKIT_NUM_WORKERS", "0")
# 3D modalities default to disk_cache=auto (on when an archive exceeds the memory cache, as tests with
# cache_bytes=0 do): their files go to a folder of this session, never to the user's ~/.cache
if "MEDKIT_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["MEDKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="medkit-test-cache-")

try:
    import torch
except ImportError:  # pragma: no cover - torch is a dependency of medkit
    torch = None  # type: ignore[assignment]
if torch is not None:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
