"""Benchmark: k-means buffer selection (rehearsal) — medkit's torch k-means vs sklearn and faiss.

Each method runs in its own subprocess on the same seeded, clustered features, so peak memory is
measured per method: the resident set after the data is built (``data``), and the peak during the fit
and selection (Linux ``VmHWM`` reset just before the fit; ``ru_maxrss`` elsewhere). ``wall s`` covers
the fit and the buffer selection; ``seed s`` is the initialisation alone and ``iter s`` the iterations
(with the final assignment), so ``s/iter`` compares the Lloyd passes themselves. Inertia is computed
the same way for every method, exactly, from its final centres and labels (untimed).

Methods:
    torch             medkit's :func:`medkit_plugin_medcoss.kmeans.fit` (k-means++ on a sample, Lloyd).
    torch-minibatch   the same, mini-batch updates.
    sklearn           scikit-learn at its defaults (greedy k-means++ on all rows, Lloyd, tol 1e-4),
                      with ``max_iter = --iters`` like medkit.
    sklearn-seeded    the same, but k-means++ on the very rows medkit seeds on (same generator).
    faiss             ``faiss.Kmeans`` (random init, ``--faiss-iters`` iterations, default 25 = its
                      default). Optional, bench-only dependency: ``pip install faiss-cpu``; a row
                      says "failed" where it is not installed.

    python bench/kmeans_buffer.py --n 100000 --dim 768 --k-frac 0.01 --threads 1 --out bench/results/kmeans.json
    python bench/kmeans_buffer.py --n 20000 --methods torch,faiss --threads 1   # quick

The JSON also records ``uptime``'s load before and after (the machine may be shared).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, peak_rss_mb as peak_mb, rss_mb

METHODS = ("torch", "torch-minibatch", "sklearn", "sklearn-seeded", "faiss")


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




def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the fit's own peak can be read (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False








def exact_sq(x: Any, centres: Any, labels: Any, batch: int = 8192) -> Any:
    """``|x − centres[labels]|²`` per row, in chunks (the same inertia rule for every method)."""
    import torch

    out = torch.empty(x.shape[0])
    for s in range(0, x.shape[0], batch):
        d = x[s:s + batch] - centres[labels[s:s + batch]]
        out[s:s + batch] = (d * d).sum(1)
    return out


def fit_method(method: str, x: Any, k: int, args: argparse.Namespace) -> dict[str, Any]:
    """Cluster ``x`` with ``method``: centres, labels and the seeding and iteration wall times."""
    import numpy as np
    import torch

    from medkit_plugin_medcoss.kmeans import fit, init_rows

    if method in ("torch", "torch-minibatch"):
        res = fit(x, k, iters=args.iters, batch=args.batch, seed=0,
                  method="minibatch" if method == "torch-minibatch" else "lloyd")
        return {"labels": res.labels, "sq": res.sq_dist, "centres": res.centroids, "iterations": res.iterations,
                "converged": res.converged, "seed_s": res.seconds["seeding"], "iter_s": res.seconds["iterations"]}
    arr = x.numpy()
    if method.startswith("sklearn"):
        from sklearn.cluster import KMeans, kmeans_plusplus

        # KMeans' default init is exactly this call on all rows (greedy k-means++, 2 + ln K trials);
        # "sklearn-seeded" runs it on the rows medkit seeds on (same generator, same draw)
        t0 = time.perf_counter()
        if method == "sklearn-seeded":
            idx = init_rows(x.shape[0], k, torch.Generator().manual_seed(0)).numpy()
            init, _ = kmeans_plusplus(arr[idx], k, random_state=0)
        else:
            init, _ = kmeans_plusplus(arr, k, random_state=0)
        t1 = time.perf_counter()
        km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=args.iters, random_state=0).fit(arr)
        t2 = time.perf_counter()
        return {"labels": torch.from_numpy(km.labels_.astype(np.int64)),
                "centres": torch.from_numpy(km.cluster_centers_.astype(np.float32)),
                "iterations": int(km.n_iter_), "converged": int(km.n_iter_) < args.iters,
                "seed_s": t1 - t0, "iter_s": t2 - t1}
    import faiss  # optional, bench only: pip install faiss-cpu

    faiss.omp_set_num_threads(args.threads)
    km = faiss.Kmeans(x.shape[1], k, niter=args.faiss_iters, seed=1234, verbose=False)
    t0 = time.perf_counter()
    km.train(arr)  # random init on a sample, then niter Lloyd iterations (no early stop)
    t1 = time.perf_counter()
    _, lab = km.index.search(arr, 1)  # the final assignment, counted with the iterations like medkit's
    t2 = time.perf_counter()
    iter_s = float(km.iteration_stats[-1]["time"]) if km.iteration_stats else t1 - t0  # cumulative, s
    iter_s = min(iter_s, t1 - t0)
    return {"labels": torch.from_numpy(lab[:, 0].astype(np.int64)), "centres": torch.from_numpy(km.centroids),
            "iterations": args.faiss_iters, "converged": None, "seed_s": t1 - t0 - iter_s,
            "iter_s": iter_s + (t2 - t1)}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from medkit_plugin_medcoss.buffer import buffer_sizes
    from medkit_plugin_medcoss.kmeans import select_nearest

    torch.set_num_threads(args.threads)
    k, per = buffer_sizes(args.n, args.buffer_ratio, args.k_frac, "fixed")  # the rule these figures used
    x = make_features(args.n, args.dim, k, args.seed)
    if args.worker.startswith("sklearn"):
        import sklearn.cluster  # noqa: F401 - imported before the baseline, like torch
    elif args.worker == "faiss":
        import faiss  # noqa: F401
    base = rss_mb()
    reset = reset_peak()
    t0 = time.perf_counter()
    out = fit_method(args.worker, x, k, args)
    sq = out.get("sq")
    if sq is None:
        sq = exact_sq(x, out["centres"], out["labels"])
    chosen = select_nearest(out["labels"], sq, per, k)
    wall = time.perf_counter() - t0
    peak = peak_mb() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    inertia = float(exact_sq(x, out["centres"].float(), out["labels"]).double().sum())  # untimed, same rule
    iters = out["iterations"]
    return {"method": args.worker, "n": args.n, "dim": args.dim, "clusters": k, "per_cluster": per,
            "buffer": int(chosen.numel()), "max_iter": args.faiss_iters if args.worker == "faiss" else args.iters,
            "iterations": iters, "converged": out["converged"], "seed_s": round(out["seed_s"], 2),
            "iter_s": round(out["iter_s"], 2), "s_per_iter": round(out["iter_s"] / max(iters, 1), 3),
            "wall_s": round(wall, 2), "peak_rss_mb": round(peak, 1), "data_rss_mb": round(base, 1),
            "peak_over_data_mb": round(peak - base, 1), "peak_is_fit_only": reset, "inertia": inertia,
            "inertia_per_sample": inertia / args.n}


def run_method(method: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, __file__, "--worker", method, "--n", str(args.n), "--dim", str(args.dim),
           "--k-frac", str(args.k_frac), "--buffer-ratio", str(args.buffer_ratio), "--iters", str(args.iters),
           "--batch", str(args.batch), "--seed", str(args.seed), "--threads", str(args.threads),
           "--faiss-iters", str(args.faiss_iters)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return {"method": method, "error": out.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    ref = next((r["inertia"] for r in rows if r.get("method") == "sklearn" and "inertia" in r), None)
    head = (f"{'method':<16}{'N':>8}{'D':>6}{'K':>6}{'buffer':>8}{'iters':>7}{'seed s':>8}{'iter s':>8}"
            f"{'s/iter':>8}{'wall s':>8}{'data MiB':>10}{'peak MiB':>10}{'fit +MiB':>10}{'inertia/N':>11}"
            f"{'vs sklearn':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['method']:<16} failed: {r['error']}")
            continue
        rel = f"{r['inertia'] / ref:.4f}" if ref else "-"
        lines.append(f"{r['method']:<16}{r['n']:>8}{r['dim']:>6}{r['clusters']:>6}{r['buffer']:>8}"
                     f"{r['iterations']:>7}{r['seed_s']:>8.1f}{r['iter_s']:>8.1f}{r['s_per_iter']:>8.2f}"
                     f"{r['wall_s']:>8.1f}{r['data_rss_mb']:>10.0f}{r['peak_rss_mb']:>10.0f}"
                     f"{r['peak_over_data_mb']:>10.0f}{r['inertia_per_sample']:>11.2f}{rel:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="samples")
    p.add_argument("--dim", type=int, default=768, help="feature width")
    p.add_argument("--k-frac", type=float, default=0.01, help="clusters as a fraction of N (num_center)")
    p.add_argument("--buffer-ratio", type=float, default=0.05, help="buffer as a fraction of N")
    p.add_argument("--iters", type=int, default=50, help="most iterations (torch, sklearn: they stop earlier "
                   "when converged)")
    p.add_argument("--faiss-iters", type=int, default=25, help="faiss iterations (its default; it never stops early)")
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
    before = load()
    rows = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if method not in METHODS:
            p.error(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        rows.append(run_method(method, args))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    after = load()
    print()
    print(table(rows))
    print(f"\nload before {before}, after {after}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "threads": args.threads}
    out.write_text(json.dumps({"config": vars(args) | {"worker": None}, "host": info, "load_before": before,
                               "load_after": after, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
