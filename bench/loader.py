"""Samples/s per core of medkit's data paths on realistic generated inputs: folder (cold, warm), prepare, prepared.

Generates, seeded and once per size (kept in ``--workdir``): X-ray PNG (16-bit), JPEG (8-bit) and DICOM
(12-bit stored, with a VOI window), pathology pyramidal tiled TIFFs (JPEG tiles with ``imagecodecs``,
else zlib; 8192² by default, smaller than real 20k²+ slides), and CT ``.nii.gz`` volumes of 512²×200
voxels at 0.7×0.7×2.5 mm (``--small``: 1024² images, 4096² slides, 256²×100 CT). Then, in this one
process at one thread, for each case:

* folder, cold: a fresh modality (empty caches) loads every sample once, in the step plan's order
  (training view: seeded crop/flip); warm: the same dataset, the same samples again;
* ``prepare``: ``medkit.data.prepare.prepare`` of the folder, samples written per second;
* prepared, cold / warm: the prepared folder read in the step plan's order, and in index order
  (``--epochs K``: K passes, each with other seeds, so that fast reads are timed over more samples).

A CT archive larger than the memory cache (``ct>cache``: ``cache_bytes`` of about 1.5 prepared
volumes) shows what a shuffled window order costs with the modality's default disk cache setting.
Only ``load`` is timed (collating 8 samples is a stack), except with ``--workers N``, where prepared
reading goes through a torch ``DataLoader`` with N worker processes, each item a batch of 8 built by
the engine's own ``StepSamples`` (load, collate into the loader's reused shared-memory segments), and
the main process receives each batch as a CPU training step does (``Batch.to``). There "cold" is the
whole pass, starting and stopping the workers included, and "warm" its steady state: each worker's
CPU time from its first batch to its last (reported with the batches) plus the main process's time
on the same batches.

What the columns are:

* ``/s/core``: samples per CPU second of the loading process and its worker processes (user + system
  time from ``getrusage``, ``RUSAGE_SELF`` + ``RUSAGE_CHILDREN``; workers count once they have exited,
  which they have when a measurement ends), i.e. per core, at one thread per process. On a shared
  machine other processes do not add to it; what they still change is the speed of each CPU second
  (a busy sibling hyper-thread of the host, shared caches and memory bandwidth): by ~30% between
  runs on this project's 2-core build machine, up to ~2× in one measurement when its host is
  saturated. Compare rows of one run, or interleave runs.
* ``/s wall``: samples per wall-clock second of the same measurement, what a GPU would be fed; on a
  quiet machine and without workers equal to ``/s/core``, lower when the machine is shared.
* ``cores/GPU``: ``--appetite`` samples/s (a ViT-B MAE step in bf16 on one H100-class GPU eats several
  thousand 2D samples/s) divided by ``/s/core``.

"cold" is a fresh modality or reader (empty medkit caches, the files in the page cache after
generation), "warm" the same samples again. The JSON has every figure, ``cpu_s`` and ``wall_s``.

    python bench/loader.py --small                   # a few minutes
    python bench/loader.py --cases xray-png,ct --budget-s 60
    PYTHONPATH=/other/tree ... python bench/loader.py  # the same inputs through other code (before/after)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load

CASES = ("xray-png", "xray-jpeg", "xray-dicom", "pathology", "ct", "ct>cache")
#: case -> (modality, data folder name)
MODALITY = {"xray-png": ("xray", "png"), "xray-jpeg": ("xray", "jpeg"), "xray-dicom": ("xray", "dicom"),
            "pathology": ("pathology", "slides"), "ct": ("ct", "ct"), "ct>cache": ("ct", "ct")}


# -- inputs --------------------------------------------------------------------------------------
def radiograph(n: int, seed: int) -> Any:
    """A noisy uint16 chest-like image: two bright lungs, ribs, a dark background."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    img = (20000 + 15000 * np.exp(-((x - .35) ** 2 + (y - .5) ** 2) / .03)
           + 15000 * np.exp(-((x - .65) ** 2 + (y - .5) ** 2) / .03) + 8000 * np.sin(40 * y) * (x > .3) * (x < .7))
    img += rng.normal(0, 1500, img.shape).astype(np.float32)
    return np.clip(img, 0, 65535).astype(np.uint16)


def write_xray(root: Path, n: int, size: int) -> None:
    from PIL import Image

    from medkit_plugin_xray.demo import write_dicom

    for sub in ("png", "jpeg", "dicom"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = radiograph(size, i)
        Image.fromarray(img).save(root / "png" / f"cxr{i:03d}.png")
        Image.fromarray((img >> 8).astype("uint8")).save(root / "jpeg" / f"cxr{i:03d}.jpg", quality=90)
        write_dicom(root / "dicom" / f"cxr{i:03d}.dcm", (img >> 4).astype("uint16"), window=(1900.0, 2400.0),
                    uid_seed=f"bench{i}")


def write_slides(root: Path, n: int, size: int) -> str:
    """Pyramidal tiled RGB TIFFs at 0.25 µm/px (OpenSlide's generic-tiff); returns the tile codec."""
    import numpy as np
    import tifffile
    from PIL import Image

    try:
        import imagecodecs  # noqa: F401  (tifffile's JPEG encoder)
        codec = "jpeg"
    except ImportError:
        codec = "zlib"
    (root / "slides").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        low = rng.uniform(0, 1, (size // 64, size // 64)).astype(np.float32)
        field = np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BILINEAR))
        tissue = (field > 0.35)[..., None]
        pink, white = np.array([234, 168, 204], np.float32), np.array([246, 244, 247], np.float32)
        img = np.where(tissue, pink, white).astype(np.uint8)
        img[tissue[..., 0]] -= rng.integers(0, 60, (int(tissue.sum()), 1), dtype=np.uint8)  # nuclei-like texture
        with tifffile.TiffWriter(root / "slides" / f"slide{i:02d}.tiff", bigtiff=True) as tw:
            for k in range(4):
                level = np.ascontiguousarray(img[:: 2 ** k, :: 2 ** k])
                tw.write(level, tile=(256, 256), photometric="rgb", compression=codec,
                         resolution=(1e4 / (0.25 * 2 ** k),) * 2, resolutionunit="CENTIMETER",
                         subfiletype=0 if k == 0 else 1)
    return codec


def write_ct(root: Path, n: int, size: int, slices: int) -> None:
    import nibabel as nib
    import numpy as np

    (root / "ct").mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((x - .5) / .42) ** 2 + ((y - .5) / .32) ** 2 < 1
    for i in range(n):
        rng = np.random.default_rng(200 + i)
        vol = np.where(body, 40, -1000).astype(np.float32)[..., None] + np.zeros(slices, np.float32)
        vol += rng.normal(0, 20, vol.shape).astype(np.float32)
        img = nib.Nifti1Image(vol.astype(np.int16), np.diag([0.7, 0.7, 2.5, 1.0]))
        img.header.set_xyzt_units("mm")
        nib.save(img, str(root / "ct" / f"ct{i:02d}.nii.gz"))


def ensure_inputs(args: argparse.Namespace, cases: list[str]) -> dict[str, Any]:
    """Generate the inputs the ``cases`` need, once per configuration (a stamp file per group)."""
    sizes = {"xray": 1024 if args.small else 2048, "slide": 4096 if args.small else 8192,
             "ct": [256, 100] if args.small else [512, 200]}
    root = Path(args.workdir) / ("small" if args.small else "full")
    groups = {"xray": (args.n_2d, lambda: write_xray(root, args.n_2d, sizes["xray"])),
              "slides": (args.n_slides, lambda: write_slides(root, args.n_slides, sizes["slide"])),
              "ct": (args.n_ct, lambda: write_ct(root, args.n_ct, *sizes["ct"]))}
    wanted = {"xray" if c.startswith("xray") else "slides" if c == "pathology" else "ct" for c in cases}
    info: dict[str, Any] = {"root": str(root), "sizes": sizes, "generate_s": 0.0,
                            "tile_codec": "jpeg" if _has_imagecodecs() else "zlib"}
    for group in sorted(wanted):
        n, write = groups[group]
        spec = {"size": sizes["xray" if group == "xray" else "slide" if group == "slides" else "ct"], "n": n,
                "codec": info["tile_codec"], "version": 1}
        stamp = root / f"{group}.json"
        if stamp.is_file() and json.loads(stamp.read_text()) == spec:
            continue
        shutil.rmtree(root / {"xray": "png", "slides": "slides", "ct": "ct"}[group], ignore_errors=True)
        t0 = time.perf_counter()
        write()
        info["generate_s"] += time.perf_counter() - t0
        stamp.write_text(json.dumps(spec))
    return info


def _has_imagecodecs() -> bool:
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


# -- measurements --------------------------------------------------------------------------------
def make_modality(case: str, cache_dir: Path) -> Any:
    """A fresh modality (fresh caches) for ``case``, with the options a user would give."""
    from medkit.registry import create

    name = MODALITY[case][0]
    os.environ["MEDKIT_CACHE_DIR"] = str(cache_dir)
    if name == "xray":
        return create("modality", "xray", frontal_only=False)
    if case == "ct>cache":
        # about 1.5 prepared volumes (192² in-plane, 1 mm slices, float32): the archive does not fit
        return create("modality", "ct", cache_bytes=int(1.5 * 4 * 192 * 192 * VOLUME_SLICES[0]))
    return create("modality", name)


VOLUME_SLICES = [500]  # prepared slices of one generated volume (set from the inputs)


def plan_order(n: int, seed: int = 0, batch: int = 8) -> list[tuple[int, int]]:
    """``(index, seed)`` of one epoch in the step plan's order (the plan of the code under test)."""
    from medkit.api.batch import Source
    from medkit.engine.plan import StepPlan

    plan = StepPlan([Source("m", list(range(n)))], batch_size=batch, max_steps=math.ceil(n / batch),
                    seed=seed, stage=0)
    out: list[tuple[int, int]] = []
    for s in range(len(plan)):
        _, indices, seeds = plan.step(s)
        out += list(zip(indices, seeds))
    return out[:n]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have exited (its
    DataLoader workers, once shut down)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def rates(done: int, cpu: float, wall: float) -> dict[str, Any]:
    return {"samples": done, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "per_s": done / cpu if cpu > 0 else float("nan"), "wall_per_s": done / wall if wall > 0 else float("nan")}


def timed(load_one: Callable[[int, int], Any], order: list[tuple[int, int]], budget_s: float) -> dict[str, Any]:
    """Load ``order`` in this process until done or ``budget_s`` CPU seconds have passed:
    :func:`rates` per CPU second (``per_s``) and per wall second (``wall_per_s``)."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    done = 0
    for i, seed in order:
        load_one(i, seed)
        done += 1
        if cpu_seconds() - c0 > budget_s:
            break
    return rates(done, cpu_seconds() - c0, time.perf_counter() - t0)


class _Batches:
    """Item ``k``: the samples ``order[8k:8k+8]`` loaded and collated by the engine's
    :class:`~medkit.engine.loader.StepSamples` with the modality's default tokenizer, as a training
    worker builds a step's batch (into the loader's reused shared-memory segments)."""

    def __init__(self, ds: Any, order: list[tuple[int, int]], slots: Any = None, batch: int = 8) -> None:
        from medkit.engine.loader import StepSamples
        from medkit.registry import create

        self.order, self.batch = order, batch
        self.name = ds.modality.name
        tokenizer = create("tokenizer", "patch_3d" if self.name == "ct" else "patch_2d", embed_dim=8)
        # code before the shared segments (a before/after run through PYTHONPATH) takes no slots
        self.steps = StepSamples({self.name: ds}, {self.name: tokenizer}, *([slots] if slots is not None else []))

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch)

    def __getitem__(self, k: int) -> Any:
        from medkit.engine.loader import StepItem

        part = self.order[k * self.batch:(k + 1) * self.batch]
        return self.steps[StepItem(step=k, modality=self.name, role="current", indices=tuple(i for i, _ in part),
                                   seeds=tuple(s for _, s in part))]


def _one_thread(_: int) -> None:
    import torch

    torch.set_num_threads(1)


def timed_workers(ds: Any, order: list[tuple[int, int]], workers: int,
                  batch: int = 8) -> tuple[dict[str, Any], dict[str, Any]]:
    """All of ``order`` through a ``DataLoader`` with ``workers`` processes, the main process
    receiving each batch as a CPU training step does (``Batch.to``). Returns :func:`rates` twice:
    over the whole pass (starting and stopping the workers included; CPU seconds of this process
    and the workers, counted after they are shut down), and in the steady state: from each
    worker's first batch to its last (each worker reports its own CPU time with its batches), plus
    this process's time over the same batches."""
    import torch

    try:
        from medkit.engine.loader import received
        from medkit.engine.shm_slots import SharedSlots
    except ImportError:  # code before the shared segments: a fresh segment per batch
        SharedSlots = None

        def received(items: Any, _: Any) -> Any:
            return (b if not isinstance(b, tuple) else b[0] for b in items)

    t0, c0 = time.perf_counter(), cpu_seconds()
    slots = SharedSlots(workers) if SharedSlots is not None else None
    loader = torch.utils.data.DataLoader(_Timed(_Batches(ds, order, slots, batch)), batch_size=None,
                                         num_workers=workers, worker_init_fn=_one_thread)
    it = iter(loader)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    counted, main_s, t1 = 0, 0.0, 0.0

    meta: list[tuple[int, float]] = []  # (worker id, its CPU seconds) of the item being received

    def items(timed: Any) -> Any:
        for item, wid, wcpu in timed:
            meta.append((wid, wcpu))
            yield item

    done = 0
    for batch in received(items(it), slots):
        wid, wcpu = meta.pop()
        m0 = cpu_seconds()
        n = len(batch.to("cpu"))  # what a CPU training step does with it (grey made whole)
        done += n
        if wid not in first:
            first[wid] = wcpu
            if len(first) == workers:
                t1 = time.perf_counter()
            continue
        last[wid] = wcpu
        counted += n
        main_s += cpu_seconds() - m0
    t2 = time.perf_counter()
    it._shutdown_workers()  # joins the workers, so that RUSAGE_CHILDREN has their time
    del it, loader
    whole = rates(done, cpu_seconds() - c0, time.perf_counter() - t0)
    workers_s = sum(last[w] - first[w] for w in last)
    steady = rates(counted, workers_s + main_s, t2 - t1)
    steady.update(workers_cpu_s=round(workers_s, 3), main_cpu_s=round(main_s, 3))
    return whole, steady


class _Timed:
    """``(item, worker id, the worker's CPU seconds so far)`` of a dataset read in a worker."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, k: int) -> Any:
        import torch

        item = self.inner[k]
        own = resource.getrusage(resource.RUSAGE_SELF)
        info = torch.utils.data.get_worker_info()
        return item, (0 if info is None else info.id), own.ru_utime + own.ru_stime


def folder_case(case: str, data: Path, args: argparse.Namespace, cache_dir: Path) -> dict[str, Any]:
    shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        from medkit.data.dicom import clear_cache
        clear_cache()
    except ImportError:
        pass
    t0 = time.perf_counter()
    ds = make_modality(case, cache_dir).dataset(data, train=True)
    index_s = time.perf_counter() - t0
    order = plan_order(len(ds))
    cold = timed(ds.load, order, args.budget_s)
    warm = timed(ds.load, order[: cold["samples"]], args.budget_s)
    return {"case": case, "path": "folder", "samples_total": len(ds), "index_s": round(index_s, 3),
            "cold": cold, "warm": warm}


def prepared_case(case: str, data: Path, out: Path, args: argparse.Namespace, cache_dir: Path) -> list[dict[str, Any]]:
    from medkit.data.prepare import prepare
    from medkit.data.prepared_dataset import open_prepared

    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    modality = make_modality(case, cache_dir)
    t0, c0 = time.perf_counter(), cpu_seconds()
    prepare(modality, data, out, workers=1)  # in this process: its CPU time is prepare's
    cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
    n = len(open_prepared(modality, out, train=False))
    rows = [{"case": case, "path": "prepare", "samples_total": n, "cold": rates(n, cpu, wall)}]
    epochs = max(1, int(getattr(args, "epochs", 1)))  # later epochs: the plan's order again, new seeds
    for how, order in (("plan order", [(i, s + e * 1_000_003) for e in range(epochs) for i, s in plan_order(n)]),
                       ("index order", [(i, i + e * n) for e in range(epochs) for i in range(n)])):
        ds = open_prepared(make_modality(case, cache_dir), out, train=True)  # fresh reader: cold
        if args.workers > 0:  # cold: the whole pass, workers started and stopped; warm: steady state
            cold, warm = timed_workers(ds, order, args.workers, args.batch)
            how += f", {args.workers} workers" + (f", batch {args.batch}" if args.batch != 8 else "")
        else:
            cold = timed(ds.load, order, args.budget_s)
            warm = timed(ds.load, order[: cold["samples"]], args.budget_s)
        rows.append({"case": case, "path": f"prepared, {how}", "samples_total": n, "cold": cold, "warm": warm})
    return rows


def with_cores(row: dict[str, Any], appetite: float) -> dict[str, Any]:
    for k in ("cold", "warm"):
        if k in row and row[k]["per_s"] > 0:
            row[k]["cores_per_gpu"] = appetite / row[k]["per_s"]
    return row


def table(rows: list[dict[str, Any]], appetite: float) -> str:
    head = (f"{'case':<11}{'path':<33}{'samples':>8}{'cold /s/core':>13}{'cold /s wall':>13}"
            f"{'warm /s/core':>13}{'warm /s wall':>13}{f'cores/GPU @{appetite:g}/s':>24}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:<11}{r.get('path', ''):<33} failed: {r['error']}")
            continue
        cold, warm = r["cold"], r.get("warm")
        cores = f"{cold.get('cores_per_gpu', float('nan')):.1f}"
        if warm:
            cores += f" / {warm.get('cores_per_gpu', float('nan')):.1f}"
        nan = float("nan")
        lines.append(f"{r['case']:<11}{r['path']:<33}{cold['samples']:>8}{cold['per_s']:>13.1f}"
                     f"{cold.get('wall_per_s', nan):>13.1f}{(warm['per_s'] if warm else nan):>13.1f}"
                     f"{(warm.get('wall_per_s', nan) if warm else nan):>13.1f}{cores:>24}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="1024² X-rays, 4096² slides, 256²×100 CT")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--paths", default="folder,prepared", help="folder and/or prepared (prepare + reading)")
    p.add_argument("--n-2d", type=int, default=24, help="X-ray files per format")
    p.add_argument("--n-slides", type=int, default=2, help="pathology slides")
    p.add_argument("--n-ct", type=int, default=4, help="CT volumes")
    p.add_argument("--budget-s", type=float, default=30.0, help="most CPU seconds per measurement")
    p.add_argument("--epochs", type=int, default=1,
                   help="epochs of prepared reading per measurement (more samples: steadier rates)")
    p.add_argument("--workers", type=int, default=0,
                   help="prepared reading through a DataLoader with this many worker processes, all of "
                        "--epochs (no --budget-s); 0: in this process")
    p.add_argument("--batch", type=int, default=8,
                   help="with --workers: samples per batch a worker sends (the transfer's cost is per batch)")
    p.add_argument("--appetite", type=float, default=3000.0, help="samples/s one GPU consumes (cores per GPU)")
    p.add_argument("--workdir", default="/tmp/medkit-bench-loader", help="generated inputs, prepared folders")
    p.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before/after)")
    p.add_argument("--out", default="bench/results/loader.json", help="JSON results file")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    for module in ("litdata", "pydicom", "monai.transforms", "nibabel", "openslide", "tifffile"):
        try:  # imported before any timing, so that no "cold" row pays for a first import
            __import__(module)
        except ImportError:
            pass
    before = load()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for case in cases:
        if case not in CASES:
            p.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    info = ensure_inputs(args, cases)
    root = Path(info["root"])
    ct_slices = info["sizes"]["ct"][1]
    VOLUME_SLICES[0] = int(ct_slices * 2.5)  # resampled to the default 1 mm
    print(f"inputs under {root} (generated now: {info['generate_s']:.0f}s; slide tiles: {info['tile_codec']})",
          flush=True)
    rows: list[dict[str, Any]] = []
    paths = {s.strip() for s in args.paths.split(",")}
    for case in cases:
        data = root / MODALITY[case][1]
        cache_dir = Path(args.workdir) / "cache"
        todo: list[Callable[[], list[dict[str, Any]]]] = []
        prepared_out = Path(args.workdir) / "prepared" / case
        if "folder" in paths:
            todo.append(lambda c=case, d=data, k=cache_dir: [folder_case(c, d, args, k)])
        if "prepared" in paths and case != "ct>cache":
            todo.append(lambda c=case, d=data, k=cache_dir, o=prepared_out: prepared_case(c, d, o, args, k))
        for job in todo:
            try:
                got = job()
            except Exception as exc:  # noqa: BLE001 - a failed case is a row, the others still run
                got = [{"case": case, "error": f"{type(exc).__name__}: {exc}"}]
            for r in got:
                rows.append(with_cores(r, args.appetite))
                print(table(rows[-1:], args.appetite).splitlines()[-1], flush=True)
    after = load()
    print()
    print(table(rows, args.appetite))
    print(f"\nload before {before}, after {after} (a shared machine: compare rows of one run)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    host = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "threads": 1}
    out.write_text(json.dumps({"label": args.label, "config": vars(args), "inputs": info, "host": host,
                               "load_before": before, "load_after": after, "appetite": args.appetite,
                               "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
