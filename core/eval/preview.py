"""``medkit data preview``: a PNG grid of what the model is fed, through the modality's own dataset.

One row per view of each sample (as read, preprocessed, augmented), one column per sample; images are
drawn as images, volumes as three orthogonal middle slices, texts as text panels; under every panel
the file (and, for tiles and windows, where in it) and the transform that made the view. Nothing is
re-implemented: the views come from the dataset's ``raw(i)`` (optional), ``load(i, seed=None)`` and
the training view's ``load(i, seed)``, exactly what training reads.
"""

from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: The rows of a preview, top to bottom.
ROWS = ("raw", "preprocessed", "augmented")
ROW_TITLES = {"raw": "as read (raw)", "preprocessed": "preprocessed (what evaluation sees)",
              "augmented": "augmented (what training sees)"}


@dataclass
class Panel:
    """One view of one sample: an array (``[H, W]``, ``[H, W, C]`` or a volume ``[D, H, W]``) or a
    text, the file name under it and the transform that made it."""

    row: str
    file: str
    transform: str
    array: np.ndarray | None = None
    text: str | None = None


def describe_transforms(modality: Any, seed: int) -> dict[str, str]:
    """Words for the transform of each row, from the modality's own options (2D, volume or text)."""
    opts = getattr(modality, "options", None)
    if opts is not None and hasattr(opts, "input_size"):  # a 2D image modality
        return {"raw": "as decoded (no transform)",
                "preprocessed": f"region resized to {opts.input_size}², normalize={opts.normalize}",
                "augmented": f"RandomResizedCrop scale={tuple(opts.crop_scale)}, hflip={opts.hflip}, seed={{seed}}"}
    if hasattr(modality, "depth") and hasattr(modality, "input_size"):  # windows of volumes
        size = "×".join(str(v) for v in modality.input_size)
        return {"raw": f"as read, reoriented to {getattr(modality, 'orientation', '?')}",
                "preprocessed": f"{type(modality).__name__}.prepare (spacing, intensity), "
                                f"{modality.depth}-slice window, resized to {size}",
                "augmented": f"random flips p={getattr(modality, 'flip_prob', '?')}, seed={{seed}}"}
    return {"raw": "as read", "preprocessed": "cleaned text (the model's input)",
            "augmented": "none at load time (MLM masking is drawn by the objective)"}


def _file_of(sample_id: str, raw: dict[str, Any] | None) -> tuple[str, str]:
    """``(file, where in it)`` of a sample: the raw view's, else from the id (``path#where``)."""
    if raw is not None:
        return str(raw.get("file", sample_id)), str(raw.get("where", ""))
    file, _, where = sample_id.partition("#")
    return file, where


def _as_array(x: Any) -> np.ndarray | None:
    """A loaded input as numpy ``[H, W]``/``[H, W, C]`` (2D) or ``[D, H, W]`` (3D); ``None`` for text."""
    if isinstance(x, str):
        return None
    arr = np.asarray(x.detach().cpu().float().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
    if arr.ndim == 4:  # [C, D, H, W]: the first channel
        return arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3):  # [C, H, W]
        return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    return arr


def collect_panels(modality: Any, eval_ds: Any, train_ds: Any, indices: Sequence[int], *, seed: int,
                   dims: int) -> list[list[Panel]]:
    """The panels of every row (:data:`ROWS`) for the samples ``indices``."""
    words = describe_transforms(modality, seed)
    rows: list[list[Panel]] = [[] for _ in ROWS]
    raw_of = getattr(eval_ds, "raw", None)
    for k, i in enumerate(indices):
        pre = eval_ds.load(int(i), seed=None)
        sid = str(pre.get("id", i))
        raw = raw_of(int(i)) if callable(raw_of) else None
        file, where = _file_of(sid, raw)
        name = f"{file}" + (f"\n{where}" if where else "")
        if raw is not None:
            rows[0].append(Panel("raw", name, _range(words["raw"], raw.get("array")),
                                 array=np.asarray(raw["array"]) if raw.get("array") is not None else None,
                                 text=raw.get("text")))
        elif isinstance(pre["input"], str):
            rows[0].append(Panel("raw", name, "the dataset keeps only the cleaned text", text=pre["input"]))
        else:
            rows[0].append(Panel("raw", name, "no raw view from this dataset (it has no raw())"))
        s = int(seed) + k
        aug = train_ds.load(int(i), seed=s)
        for r, sample, text in ((1, pre, words["preprocessed"]), (2, aug, words["augmented"].format(seed=s))):
            x = sample["input"]
            arr = _as_array(x)
            rows[r].append(Panel(ROWS[r], name, _range(text, arr), array=arr,
                                 text=x if isinstance(x, str) else None))
    return rows


def _range(text: str, arr: Any) -> str:
    if arr is None:
        return text
    a = np.asarray(arr)
    if a.size == 0 or not np.issubdtype(a.dtype, np.number):
        return text
    shape = "×".join(str(v) for v in a.shape)
    return f"{text}\n{shape}, values [{float(a.min()):.3g}, {float(a.max()):.3g}]"


def orthogonal_slices(vol: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The middle slice of each axis of ``vol [D, H, W]``: ``[("slice 8/16", [H, W]), ("row ...",
    [D, W]), ("column ...", [D, H])]``.

    Hand-written rather than MONAI's ``matshow3d``: that tiles slices along one axis only and draws
    through pyplot's global state, while three orthogonal views are what shows orientation and the
    window's depth at a glance.
    """
    d, h, w = vol.shape
    return [(f"slice {d // 2}/{d}", vol[d // 2]), (f"row {h // 2}/{h}", vol[:, h // 2, :]),
            (f"column {w // 2}/{w}", vol[:, :, w // 2])]


def _draw(ax: Any, panel: Panel, dims: int) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if panel.text is not None and panel.array is None:
        body = textwrap.fill(" ".join(panel.text.split())[:480], 44)
        ax.text(0.02, 0.98, body, ha="left", va="top", fontsize=6, family="monospace", transform=ax.transAxes)
    elif panel.array is not None:
        a = np.asarray(panel.array)
        if a.ndim == 3 and (dims == 3 or a.shape[-1] not in (3, 4)):  # a volume: three views, one grey scale
            lo, hi = float(a.min()), float(a.max())
            for k, (name, view) in enumerate(orthogonal_slices(a)):
                inset = ax.inset_axes((k / 3 + 0.01, 0.0, 1 / 3 - 0.02, 0.9))
                inset.imshow(view, cmap="gray", vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
                inset.set_xticks([])
                inset.set_yticks([])
                inset.set_title(name, fontsize=5.5, pad=1.5)
            ax.set_frame_on(False)
        elif a.ndim == 3:  # colour: scale to [0, 1] for imshow, as one image
            lo, hi = float(a.min()), float(a.max())
            ax.imshow((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a, dtype=np.float32))
        else:
            ax.imshow(a, cmap="gray", interpolation="nearest")
    else:
        ax.text(0.5, 0.5, "not available", ha="center", va="center", fontsize=7, color="0.4",
                transform=ax.transAxes)
    ax.set_xlabel(f"{panel.file}\n{panel.transform}", fontsize=5.5)


def preview_figure(modality_name: str, dims: int, rows: Sequence[Sequence[Panel]], *, source: str) -> Any:
    """One row per view (:data:`ROWS`), one column per sample; returns the matplotlib figure."""
    from medkit.eval.plots import new_figure

    cols = max((len(r) for r in rows), default=1) or 1
    width = (3.6 if dims == 3 else 2.6) * cols + 0.8
    fig = new_figure(width, (1.5 if dims == 1 else 2.9) * len(rows) + 0.6)
    fig.set_layout_engine("constrained")
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            _draw(ax, panel, dims)
            if c == 0:
                ax.set_ylabel(ROW_TITLES[panel.row], fontsize=8)
    view = {1: "texts", 2: "images", 3: "volumes, the middle slice of each axis (stretched to fit)"}.get(dims, "")
    fig.suptitle(f"{modality_name}: {view} — {source}", fontsize=9)
    return fig


def preview_png(path: Path, modality_name: str, modality: Any, root: Path, *, samples: int = 4,
                seed: int = 0, dataset: Any | None = None) -> Path:
    """Write the preview of ``modality`` (a created modality object) reading ``root`` to ``path``.

    ``dataset`` is an already opened evaluation-view dataset of ``root``; without it ``root`` is
    opened by :func:`medkit.data.open_data.open_data` (a prepared folder from its shards, checked
    against ``modality``'s preprocessing config). Samples are spread evenly over the dataset.
    """
    from medkit.data.open_data import open_data
    from medkit.eval.plots import save_png

    eval_ds = dataset if dataset is not None else open_data(modality, root, train=False)
    view = getattr(eval_ds, "view", None)
    train_ds = view(True) if callable(view) else modality.dataset(Path(root), train=True)
    n = len(eval_ds)
    k = max(0, min(int(samples), n))
    indices = sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist())) if k else []
    dims = int(getattr(modality, "dims", 2))
    rows = collect_panels(modality, eval_ds, train_ds, indices, seed=seed, dims=dims)
    fig = preview_figure(modality_name, dims, rows, source=f"{len(indices)} of {n} samples under {root}")
    log.info("%s: preview of %d samples written to %s", modality_name, len(indices), path)
    return save_png(fig, Path(path))


def trained_modalities(manifest: Mapping[str, Any]) -> list[str]:
    """The modalities of a run's finished stages, in stage order."""
    out: list[str] = []
    for stage in manifest.get("stages", []):
        if stage.get("status") == "done":
            out += [m for m in stage.get("modalities", []) if m not in out]
    return out


def run_previews(cfg: Mapping[str, Any], manifest: Mapping[str, Any], out: Path, components: Any, *,
                 samples: int = 4, seed: int = 0) -> list[tuple[str, str | None, str]]:
    """``preview_<modality>.png`` in ``out`` for every modality the run trained on, read with the run's
    modality options from the folder it trained on (its ``--data``, else the built-in demo data).

    Returns ``(modality, file name or None, why not)`` per modality: a folder that is gone or a
    modality whose plugin is not installed gives no picture and the reason, never a failed report.
    """
    from medkit.api.errors import MedkitError
    from medkit.data.open_data import open_eval_dataset

    given = dict((cfg.get("run") or {}).get("data") or {})
    done: list[tuple[str, str | None, str]] = []
    for m in trained_modalities(manifest):
        try:
            modality = components.create("modality", m, **dict((cfg.get("modality") or {}).get(m) or {}))
            dataset, root = open_eval_dataset(modality, m, given.get(m), who="report",
                                              hint="the folder the run read has been moved or deleted")
            name = f"preview_{m}.png"
            preview_png(out / name, m, modality, Path(root), samples=samples, seed=seed, dataset=dataset)
            done.append((m, name, ""))
        except (MedkitError, OSError) as exc:
            log.debug("report: no preview of %s: %s", m, exc)  # report.md says why, under its heading
            done.append((m, None, str(exc)))
    return done
