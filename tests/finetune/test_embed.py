"""t-SNE of pooled embeddings (supplement F): the torch fallback separates clusters; the command
draws every selected modality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medkit.api.errors import ConfigError
from medkit.finetune.embed import pca2, tsne, tsne_torch


def _nn_purity(y: np.ndarray, labels: np.ndarray) -> float:
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(axis=1)] == labels).mean())


def test_torch_tsne_separates_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(25, 16, generator=g) + 6, torch.randn(25, 16, generator=g) - 6,
                   torch.randn(25, 16, generator=g) * 0.5])
    labels = np.repeat([0, 1, 2], 25)
    y = tsne_torch(x, perplexity=10, iters=400).numpy()
    assert y.shape == (75, 2) and np.isfinite(y).all()
    assert _nn_purity(y, labels) == 1.0
    centres = np.stack([y[labels == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(y[labels == k] - centres[k], axis=1).mean() for k in range(3))
    assert min(np.linalg.norm(centres[a] - centres[b]) for a, b in [(0, 1), (0, 2), (1, 2)]) > 2 * spread


def test_pca_and_method_choice() -> None:
    x = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [4.0, 0.1, 0.0]])
    y = pca2(x)
    assert y.shape == (3, 2) and abs(float(y[2, 0] - y[0, 0])) == pytest.approx(4.0, abs=0.01)
    assert tsne(x, method="pca")[1] == "pca"
    with pytest.raises(ConfigError, match="method"):
        tsne(x, method="umap")
    pytest.importorskip("sklearn", reason="scikit-learn is a dev extra")
    y, used = tsne(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)), method="auto")
    assert used == "sklearn" and y.shape == (12, 2)


def test_embed_command(medkit, pretrained_run: Path, tmp_path: Path) -> None:
    from medkit.testing.synthetic import use_synthetic_host

    use_synthetic_host()  # synth_a / synth_2d, the modalities the run was trained on
    out = tmp_path / "tsne.png"
    res = medkit("embed", str(pretrained_run), "--modality", "synth_a,synth_2d", "--max-samples", "8",
                 "--method", "torch", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = json.loads(out.with_suffix(".json").read_text())
    assert points["method"] == "torch" and len(points["points"]) == 16
    assert {p["modality"] for p in points["points"]} == {"synth_a", "synth_2d"}


def test_embed_names_what_the_run_trained_on_and_warns_about_the_rest(medkit, pretrained_run: Path, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """``embed runs/real_ct --modality mri`` plotted a modality the run never saw without a word."""
    from medkit.testing.synthetic import use_synthetic_host

    use_synthetic_host()
    out = tmp_path / "tsne.png"
    res = medkit("embed", str(pretrained_run), "--modality", "synth_a,synth_b", "--max-samples", "4",
                 "--method", "pca", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "the model was trained on: synth_a, synth_2d" in res.output
    assert "synth_b was never seen in training" in res.output + caplog.text  # the warning, logged once
    points = json.loads(out.with_suffix(".json").read_text())
    assert points["trained_on"] == ["synth_a", "synth_2d"] and points["never_trained_on"] == ["synth_b"]
