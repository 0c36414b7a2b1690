"""Procedural report, X-ray, CT and MRI files on disk for bench/continual_multi.py, read by the real plugins.

Every modality has four classes and is written as the files its plugin reads, so the benchmark goes
through the same readers, tokenizers and augmentations real data does:

* ``report`` (1D): ``reports/r<source>.txt`` + ``labels.csv`` (``id``, ``label``). Each report is
  five short sentences drawn from a shared radiology vocabulary; a fraction ``TOPIC_RATE`` of the
  words come from its class's topic vocabulary, and neighbouring topics share half their words
  (overlap). The report plugin makes every report its own source.
* ``xray`` (2D): ``p<source>_v<k>.png`` (grey, ``SIZE_2D``²), ``metadata.csv`` (``path``,
  ``PatientID``: two views per patient, so the split keeps a patient whole) and ``labels.csv``.
  Class = orientation (0°/45°/90°/135°) of a faint grating of amplitude ``GRATING_AMP`` under a
  smooth random background and pixel noise; views differ in noise and background.
* ``ct`` (3D): ``v<source>.nii.gz`` (``VOL_SHAPE``, 1 mm, HU-like values) + ``labels.csv``. Class =
  the correlation length of a smooth texture (4 Gaussian widths), mixed with white noise of weight
  ``1 - CT_TEXTURE``. Two windows of ``VOL_SHAPE[2] / 2`` slices per volume are its two views.
* ``mri`` (3D): the same layout; class = the axis a texture is stretched along (x, y, z or none),
  mixed with white noise of weight ``1 - MRI_TEXTURE``.

**How the difficulty was chosen (development data only).** The constants above were set on a
development set (sources from :data:`DEV_OFFSET`, which no reported run reads) by one rule: a
logistic regression on fixed, untrained features of the *raw* inputs (word counts for reports; the
magnitude of the 2D / 3D Fourier transform for images and volumes), fitted on 75 % of the
development sources and scored on the rest, must score between 0.55 and 0.85 (chance 0.25): above
chance, so the classes are learnable, and clearly below 1, so probe accuracies can rise or fall.
:func:`dev_check` computes it (``python bench/multi_data.py``); at the values here it gives report
0.74, xray 0.74, ct 0.62, mri 0.78 (the first values tried, 0.18 / 0.07 / 0.5 / 0.5, gave 0.96 / 0.97
/ 1.0 / 1.0). No number of a reported run was looked at to set them.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = 4
VIEWS = 2  # views per source: X-ray images per patient; windows per volume
SIZE_2D = 64
VOL_SHAPE = (32, 32, 16)  # X, Y, Z (slices); two windows of 8 slices
DEV_OFFSET = 900_000  # development sources: difficulty chosen here, never in a reported run
SWEEP_OFFSET = 100_000  # EWC λ sweep's sources: disjoint from every reported run's

TOPIC_RATE = 0.08
GRATING_AMP = 0.06
CT_TEXTURE = 0.18
MRI_TEXTURE = 0.18

COMMON = ("the there is no seen noted with and of in on at for lung lungs chest heart size normal stable "
          "mild small right left upper lower lobe base field view image study prior compared change new "
          "finding findings evidence limited within appears unchanged unremarkable").split()
TOPIC_WORDS = ("effusion pleural fluid blunting meniscus costophrenic "
               "pneumothorax apical collapse lucency edge air "
               "consolidation opacity airspace pneumonia infiltrate dense "
               "edema congestion vascular interstitial cephalization kerley "
               "cardiomegaly enlarged silhouette ventricle pericardial dilated "
               "nodule mass lesion granuloma calcified spiculated").split()


def _topic(label: int) -> list[str]:
    """Class ``label``'s vocabulary: 12 words, the last 6 shared with the next class (overlap)."""
    return TOPIC_WORDS[6 * label: 6 * label + 12]


def make_report(label: int, source: int) -> str:
    rng = random.Random(source * 7919 + 11)
    topic = _topic(label)
    sentences = []
    for _ in range(5):
        words = [rng.choice(topic) if rng.random() < TOPIC_RATE else rng.choice(COMMON) for _ in range(7)]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], sigma: Any) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    return (x - x.mean()) / (x.std() + 1e-8)


def make_xray(label: int, source: int, view: int) -> np.ndarray:
    """A ``SIZE_2D``² grey image in [0, 1] of class ``label`` (the patient fixes the grating)."""
    obj = np.random.default_rng(source * 7919 + 23)
    noise = np.random.default_rng(source * 7919 + 23 + (view + 1) * 15_485_863)
    ax = np.linspace(-1.0, 1.0, SIZE_2D)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    theta = np.pi * label / 4
    freq = 3.0 + 3.0 * obj.random()
    wave = np.sin(freq * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) + 2 * np.pi * obj.random())
    background = 0.12 * _smooth(noise, (SIZE_2D, SIZE_2D), 4.0)
    img = 0.5 + GRATING_AMP * wave + background + 0.08 * noise.standard_normal((SIZE_2D, SIZE_2D))
    return np.clip(img, 0.0, 1.0)


def make_volume(kind: str, label: int, source: int) -> np.ndarray:
    """A ``VOL_SHAPE`` volume of class ``label``: HU-like for ``ct``, arbitrary units for ``mri``."""
    rng = np.random.default_rng(source * 7919 + (31 if kind == "ct" else 37))
    if kind == "ct":
        tex = _smooth(rng, VOL_SHAPE, (0.6, 1.2, 2.0, 3.2)[label])
        x = CT_TEXTURE * tex + (1 - CT_TEXTURE) * rng.standard_normal(VOL_SHAPE)
        return (40.0 + 300.0 * x).astype(np.float32)
    sigma = [1.0, 1.0, 1.0]
    if label < 3:
        sigma[label] = 3.5
    tex = _smooth(rng, VOL_SHAPE, sigma)
    x = MRI_TEXTURE * tex + (1 - MRI_TEXTURE) * rng.standard_normal(VOL_SHAPE)
    return (500.0 + 100.0 * x).astype(np.float32)


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _label(source: int) -> int:
    return source % CLASSES


def write_modality(modality: str, root: Path, sources: int, offset: int = 0) -> Path:
    """Write ``sources`` sources of ``modality`` (ids from ``offset``) under ``root`` once; returns ``root``."""
    import nibabel as nib
    from PIL import Image

    root = Path(root)
    if (root / "labels.csv").is_file():
        return root
    tmp = root.with_name(root.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    labels, meta = [["id" if modality != "xray" else "path", "label"]], [["path", "PatientID"]]
    for s in range(offset, offset + sources):
        y = _label(s)
        if modality == "report":
            (tmp / "reports").mkdir(exist_ok=True)
            (tmp / "reports" / f"r{s:07d}.txt").write_text(make_report(y, s), encoding="utf-8")
            labels.append([f"reports/r{s:07d}.txt", str(y)])
        elif modality == "xray":
            for v in range(VIEWS):
                name = f"p{s:07d}_v{v}.png"
                Image.fromarray((make_xray(y, s, v) * 255).round().astype(np.uint8), mode="L").save(tmp / name)
                labels.append([name, str(y)])
                meta.append([name, f"p{s:07d}"])
        else:
            img = nib.Nifti1Image(make_volume(modality, y, s), np.diag([1.0, 1.0, 1.0, 1.0]))
            img.header.set_xyzt_units("mm")
            (tmp / f"v{s:07d}.nii.gz").write_bytes(gzip.compress(img.to_bytes(), mtime=0))
            labels.append([f"v{s:07d}.nii.gz", str(y)])
    if modality == "xray":
        (tmp / "metadata.csv").write_text(_csv(meta), encoding="utf-8")
    (tmp / "labels.csv").write_text(_csv(labels), encoding="utf-8")
    tmp.rename(root)
    return root


def raw_features(modality: str, source: int) -> list[np.ndarray]:
    """Untrained features of one source's views for :func:`dev_check` (see the module docstring)."""
    y = _label(source)
    if modality == "report":
        words = make_report(y, source).lower().replace(".", "").split()
        vocab = sorted(set(COMMON) | set(TOPIC_WORDS))
        return [np.array([words.count(w) for w in vocab], dtype=float)]
    if modality == "xray":
        return [np.abs(np.fft.fft2(make_xray(y, source, v) - 0.5)).ravel() for v in range(VIEWS)]
    vol = make_volume(modality, y, source)
    vol = (vol - vol.mean()) / vol.std()
    return [np.log1p(np.abs(np.fft.fftn(vol[:, :, k * 8:(k + 1) * 8]))).ravel() for k in range(VIEWS)]


def dev_check(sources: int = 200) -> dict[str, float]:
    """Held-out accuracy of a logistic regression on :func:`raw_features` of the development sources."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    out = {}
    for modality in ("report", "xray", "ct", "mri"):
        split = int(sources * 0.75)
        xs, ys, xt, yt = [], [], [], []
        for s in range(DEV_OFFSET, DEV_OFFSET + sources):
            feats = raw_features(modality, s)
            (xs if s - DEV_OFFSET < split else xt).extend(feats)
            (ys if s - DEV_OFFSET < split else yt).extend([_label(s)] * len(feats))
        scaler = StandardScaler().fit(xs)
        clf = LogisticRegression(max_iter=2000, C=0.1).fit(scaler.transform(xs), ys)
        out[modality] = float(clf.score(scaler.transform(xt), yt))
    return out


if __name__ == "__main__":
    print(dev_check())
