"""``medkit embed``: t-SNE of pooled encoder embeddings coloured by modality (supplement F).

The embedding of a sample is the eval-mode encoder output averaged over its patch tokens (CLS
excluded) or, for text, over its non-padding tokens. The 2D map is scikit-learn's ``TSNE``
(``init="pca"``) when scikit-learn is installed (it is only a dev extra); otherwise an exact
t-SNE in torch (:func:`tsne_torch`: perplexity calibration by bisection, symmetric P, early
exaggeration 12, momentum 0.5→0.8, delta-bar-delta gains, PCA init) — fine for the few thousand
points such plots show. ``method="pca"`` draws the first two principal components instead.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medkit.api.components import Components
from medkit.storage.files import atomic_write_bytes, atomic_write_json
from medkit.api.errors import ConfigError
from medkit.models.features import pooled_features as pooled_features  # re-exported: its first home

log = logging.getLogger(__name__)
METHODS = ("auto", "sklearn", "torch", "pca")


def pca2(x: torch.Tensor) -> torch.Tensor:
    """First two principal components of ``x [N, D]`` (``[N, 2]``; zero-padded if ``D < 2``)."""
    x = x.double() - x.double().mean(dim=0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    y = x @ v[:2].T
    return torch.nn.functional.pad(y, (0, 2 - y.shape[1])) if y.shape[1] < 2 else y


def _conditional_p(d2: torch.Tensor, perplexity: float) -> torch.Tensor:
    """Row-wise Gaussian affinities whose entropy matches ``log(perplexity)`` (bisection on β)."""
    n = d2.shape[0]
    target = float(np.log(perplexity))
    beta = torch.ones(n, dtype=d2.dtype)
    lo = torch.zeros(n, dtype=d2.dtype)
    hi = torch.full((n,), float("inf"), dtype=d2.dtype)
    eye = torch.eye(n, dtype=torch.bool)
    d = d2 - d2.masked_fill(eye, float("inf")).min(dim=1, keepdim=True).values  # nearest at 0: no underflow
    for _ in range(100):
        p = torch.exp(-d * beta[:, None]).masked_fill(eye, 0.0)
        s = p.sum(dim=1).clamp_min(1e-300)
        entropy = torch.log(s) + beta * (d * p).sum(dim=1) / s
        too_flat = entropy > target  # raise beta
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    return p / s[:, None]


def tsne_torch(x: torch.Tensor, *, perplexity: float = 30.0, iters: int = 750, seed: int = 0) -> torch.Tensor:
    """Exact t-SNE of ``x [N, D]`` to ``[N, 2]`` (van der Maaten & Hinton 2008)."""
    n = x.shape[0]
    if n < 3:
        return pca2(x)
    gen = torch.Generator().manual_seed(seed)
    x = x.double()
    d2 = torch.cdist(x, x).pow(2)
    perplexity = max(1.0, min(float(perplexity), (n - 1) / 3.0))
    p = _conditional_p(d2, perplexity)
    p = ((p + p.T) / (2 * n)).clamp_min(1e-12)
    y = pca2(x)
    y = y / y[:, 0].std().clamp_min(1e-12) * 1e-4 + torch.randn(n, 2, generator=gen, dtype=torch.float64) * 1e-6
    update, gains = torch.zeros_like(y), torch.ones_like(y)
    lr = max(n / 12.0 / 4.0, 50.0)
    explore = min(250, iters // 3)
    for it in range(iters):
        exaggeration, momentum = (12.0, 0.5) if it < explore else (1.0, 0.8)
        num = 1.0 / (1.0 + torch.cdist(y, y).pow(2))
        num.fill_diagonal_(0.0)
        q = (num / num.sum()).clamp_min(1e-12)
        pq = (exaggeration * p - q) * num  # [N, N]
        grad = 4.0 * (pq.sum(dim=1, keepdim=True) * y - pq @ y)
        same = torch.sign(grad) == torch.sign(update)
        gains = torch.where(same, gains * 0.8, gains + 0.2).clamp_min(0.01)
        update = momentum * update - lr * gains * grad
        y = y + update
        y = y - y.mean(dim=0)
    return y


def tsne(x: torch.Tensor, *, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2D map of ``x [N, D]`` and the method actually used."""
    if method not in METHODS:
        raise ConfigError(f"t-SNE method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "pca":
        return pca2(x).numpy(), "pca"
    if method in ("auto", "sklearn"):
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            if method == "sklearn":
                raise ConfigError("--method sklearn needs scikit-learn: pip install scikit-learn") from None
        else:
            perplexity = max(1.0, min(30.0, (x.shape[0] - 1) / 3.0))
            y = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
                x.double().numpy())
            return np.asarray(y), "sklearn"
    return tsne_torch(x, seed=seed).numpy(), "torch"


def trained_on(run_dir: Path, run_cfg: dict[str, Any]) -> list[str]:
    """The modalities the run's finished stages trained on (its ``manifest.json``; without one, the
    modalities its config names)."""
    manifest_path = Path(run_dir) / "manifest.json"
    if manifest_path.is_file():
        from medkit.config.received import received_manifest

        out: list[str] = []
        for stage in received_manifest(manifest_path).get("stages", []):
            if stage.get("status") == "done":
                out += [m for m in stage.get("modalities", []) if m not in out]
        return out
    return list(run_cfg.get("run", {}).get("modalities", []))


def scatter_png(y: np.ndarray, groups: Sequence[str], path: Path, *, title: str,
                untrained: Sequence[str] = ()) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    names = list(dict.fromkeys(groups))
    labels = np.asarray(groups)
    for i, name in enumerate(names):
        pts = y[labels == name]
        never = ", never trained on" if name in untrained else ""
        ax.scatter(pts[:, 0], pts[:, 1], s=10, alpha=0.75, color=f"C{i % 10}", label=f"{name} ({len(pts)}{never})",
                   marker="x" if never else "o")
    ax.legend(fontsize=8, markerscale=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def embed_modalities(run_dir: Path, modalities: Sequence[str], data: dict[str, str | None], *,
                     max_samples: int = 200, method: str = "auto", out: Path | None = None,
                     seed: int = 0, components: Components) -> dict[str, Any]:
    """Embed up to ``max_samples`` evenly spaced samples of every modality with the pre-trained
    encoder of ``run_dir``; write the t-SNE PNG and a JSON of its points.

    ``data`` maps a modality to its folder (else its demo data is embedded); a folder written by
    ``medkit prepare`` is read from its shards, with the run's modality options, and refused when
    it was prepared with other preprocessing options than the run's.
    """
    from medkit.data.open_data import open_eval_dataset
    from medkit.finetune.backbones import load_encoder, modality_info, pretrain_config
    from medkit.finetune.config import component_defaults
    host = components  # the plugin host the caller hands in
    run_dir = Path(run_dir)
    run_cfg = pretrain_config(run_dir)
    if "uses" not in run_cfg.get("run", {}):
        raise ConfigError(f"{run_dir} is not a pre-training run (medkit run); embed reads its encoder")
    if not modalities:
        raise ConfigError("select at least one modality with --modality")
    trained = trained_on(run_dir, run_cfg)
    untrained = [m for m in modalities if m not in trained]
    if untrained:
        log.warning("%s was trained on %s only; %s %s never seen in training: %s embedding shows the "
                    "untrained tokenizer's features, not what the model learnt", run_dir.name,
                    ", ".join(trained) or "no finished stage", ", ".join(untrained),
                    "was" if len(untrained) == 1 else "were", "its" if len(untrained) == 1 else "their")
    uses = run_cfg["run"]["uses"]
    tok_of = {m: uses[m]["tokenizer"] if m in uses else modality_info(m, host)[1] for m in modalities}
    names = list(dict.fromkeys(tok_of.values()))
    encoder = load_encoder(run_dir, names, defaults={t: component_defaults("tokenizer", t, host) for t in names},
                           create=host.create)
    encoder.eval()
    feats, groups, ids = [], [], []
    for m in modalities:
        modality = host.create("modality", m, **dict(run_cfg.get("modality", {}).get(m, {})))
        # a prepared folder is read from its shards, refused if prepared with other options than the run's
        ds, _ = open_eval_dataset(modality, m, data.get(m), who="medkit embed")
        n = min(len(ds), int(max_samples))
        idx = sorted(set(np.linspace(0, len(ds) - 1, n).round().astype(int).tolist())) if n else []
        feats.append(pooled_features(encoder, m, tok_of[m], ds, idx))
        groups += [m] * len(idx)
        ids += [str(ds.ids[i]) for i in idx]
    x = torch.cat(feats)
    y, used = tsne(x, method=method, seed=seed)
    png = Path(out) if out else run_dir / "embed" / f"tsne-{'-'.join(modalities)}.png"
    scatter_png(y, groups, png, title=f"{used} t-SNE of pooled embeddings — {run_dir.name}\ntrained on: "
                f"{', '.join(trained) or 'no finished stage'}", untrained=untrained)
    atomic_write_json(png.with_suffix(".json"), {"method": used, "run_dir": str(run_dir), "trained_on": trained,
                                                 "never_trained_on": untrained, "points": [
        {"id": i, "modality": g, "x": float(a), "y": float(b)} for i, g, (a, b) in zip(ids, groups, y)]})
    return {"png": str(png), "method": used, "count": int(len(groups)), "trained_on": trained,
            "never_trained_on": untrained}
