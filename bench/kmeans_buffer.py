"""Benchmark: k-means buffer selection (rehearsal, spec §5.1) — medkit's torch k-means vs scikit-learn.

Each method runs in its own subprocess on the same seeded, clustered features, so peak memory is
measured per method: the resident set after the data is built (``data``), and the peak during the fit
and selection (Linux ``VmHWM`` reset just before the fit; ``ru_maxrss`` elsewhere). Wall time covers the
fit and the buffer selection. Prints a table and writes JSON.

    python bench/kmeans_buffer.py --n 100000 --dim 768 --k-frac 0.01 --out bench/results/kmeans.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

METHODS = ("torch", "torch-minibatch", "sklearn")


def make_features(n: int, dim: int, clusters: int, seed: int) -> Any:
    """``n × dim`` float32 features around ``clusters`` random centres (unequal sizes, unit noise)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g) * 3.0
    weights = torch.rand(clusters, generator=g) + 0.2
    member = torch.multinomial(weights, n, replacement=True, generator=g)
    x = torch.randn(n, dim, generator=g)  # built in place: no second N × D temporary
    for s in range(0, n, 8192):
        x[s:s + 8192] += centres[member[s:s + 8192]]
    return x


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the fit's own peak can be read (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    """Resident set size now, in MiB."""
    now = _status_mb("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak` (else since start), in MiB."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from medkit_plugin_medcoss.kmeans import buffer_sizes, fit, select_nearest

    torch.set_num_threads(args.threads)
    k, per = buffer_sizes(args.n, args.buffer_ratio, args.k_frac)
    x = make_features(args.n, args.dim, k, args.seed)
    if args.worker == "sklearn":
        import sklearn.cluster  # noqa: F401 - imported before the baseline, like torch
    base = rss_mb()
    reset = reset_peak()
    t0 = time.perf_counter()
    if args.worker == "sklearn":
        import numpy as np
        from sklearn.cluster import KMeans

        arr = x.numpy()
        km = KMeans(n_clusters=k, n_init=1, random_state=0, max_iter=args.iters).fit(arr)
        centres = torch.from_numpy(km.cluster_centers_.astype(np.float32))
        labels = torch.from_numpy(km.labels_.astype(np.int64))
        sq = ((x - centres[labels]) ** 2).sum(1)
        inertia, iters = float(km.inertia_), int(km.n_iter_)
        converged = iters < args.iters
    else:
        method = "minibatch" if args.worker == "torch-minibatch" else "lloyd"
        res = fit(x, k, iters=args.iters, batch=args.batch, seed=0, method=method)
        labels, sq, inertia, iters, converged = res.labels, res.sq_dist, res.inertia, res.iterations, res.converged
    chosen = select_nearest(labels, sq, per, k)
    wall = time.perf_counter() - t0
    peak = peak_mb() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"method": args.worker, "n": args.n, "dim": args.dim, "clusters": k, "per_cluster": per,
            "buffer": int(chosen.numel()), "max_iter": args.iters, "iterations": iters, "converged": converged,
            "wall_s": round(wall, 2), "peak_rss_mb": round(peak, 1), "data_rss_mb": round(base, 1),
            "peak_over_data_mb": round(peak - base, 1), "peak_is_fit_only": reset, "inertia": inertia,
            "inertia_per_sample": inertia / args.n}


def run_method(method: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, __file__, "--worker", method, "--n", str(args.n), "--dim", str(args.dim),
           "--k-frac", str(args.k_frac), "--buffer-ratio", str(args.buffer_ratio), "--iters", str(args.iters),
           "--batch", str(args.batch), "--seed", str(args.seed), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return {"method": method, "error": out.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    ref = next((r["inertia"] for r in rows if r.get("method") == "sklearn" and "inertia" in r), None)
    head = (f"{'method':<16}{'N':>8}{'D':>6}{'K':>6}{'buffer':>8}{'iters':>7}{'wall s':>9}"
            f"{'data MiB':>10}{'peak MiB':>10}{'fit +MiB':>10}{'inertia/N':>11}{'vs sklearn':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['method']:<16} failed: {r['error']}")
            continue
        rel = f"{r['inertia'] / ref:.4f}" if ref else "-"
        lines.append(f"{r['method']:<16}{r['n']:>8}{r['dim']:>6}{r['clusters']:>6}{r['buffer']:>8}"
                     f"{r['iterations']:>7}{r['wall_s']:>9.1f}{r['data_rss_mb']:>10.0f}{r['peak_rss_mb']:>10.0f}"
                     f"{r['peak_over_data_mb']:>10.0f}{r['inertia_per_sample']:>11.2f}{rel:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="samples")
    p.add_argument("--dim", type=int, default=768, help="feature width")
    p.add_argument("--k-frac", type=float, default=0.01, help="clusters as a fraction of N (num_center)")
    p.add_argument("--buffer-ratio", type=float, default=0.05, help="buffer as a fraction of N")
    p.add_argument("--iters", type=int, default=50, help="most iterations, for both methods")
    p.add_argument("--batch", type=int, default=4096, help="rows per chunk (torch)")
    p.add_argument("--seed", type=int, default=0, help="data seed")
    p.add_argument("--threads", type=int, default=2, help="threads per method")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--out", default="bench/results/kmeans.json", help="JSON results file")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    rows = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if method not in METHODS:
            p.error(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        rows.append(run_method(method, args))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "threads": args.threads}
    out.write_text(json.dumps({"config": vars(args) | {"worker": None}, "host": info, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
