"""The one hash split: held-out sets chosen by a (seeded) hash of each source, so every sample of a
volume, image, patient or report lands on the same side, whatever the order or the other files."""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

from medkit.api.errors import ConfigError, DataError


def hash_score(key: str, seed: int | None = None) -> float:
    """A number in [0, 1] drawn from ``key`` (and ``seed``) alone: sha1, the same on every machine."""
    text = str(key) if seed is None else f"{int(seed)}:{key}"
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def sources_of(dataset: Any) -> list[str]:
    """The source (volume / image / patient / report id) of every sample: ``dataset.sources``, or
    the sample ids for a dataset that does not declare any (each sample its own source)."""
    sources = getattr(dataset, "sources", None)
    return [str(s) for s in (dataset.ids if sources is None else sources)]


def _held_out(keys: Sequence[str], val_fraction: float, seed: int | None, min_val: int) -> set[str]:
    """The keys held out: those scoring below ``val_fraction``; at least ``min_val`` (the lowest
    scores) and at least one key left for training when there are two or more."""
    unique = sorted(set(keys))
    score = {k: hash_score(k, seed) for k in unique}
    val = {k for k in unique if score[k] < val_fraction}
    if len(unique) >= 2 and len(val) < min_val:
        val = set(sorted(unique, key=lambda k: score[k])[:min(min_val, len(unique) - 1)])
    if unique and len(val) == len(unique):
        val.discard(max(val, key=lambda k: score[k]))
    return val


def split_by_source(ids: Sequence[str], sources: Sequence[str], val_fraction: float = 0.1,
                    seed: int = 0, *, min_val: int = 1) -> tuple[list[int], list[int]]:
    """Train and held-out sample indices, whole sources at a time.

    A source (``sources[i]``: the volume of a window, the patient of a tile, the image or the
    report) is held out when ``sha1(f"{seed}:{source}")`` scores below ``val_fraction``, so a
    source's side depends only on its name and ``seed``: adding files never moves another source.
    At least ``min_val`` sources are held out (and one kept for training) when there are two or more.

    Raises:
        DataError: when ``ids`` and ``sources`` differ in length.
    """
    if len(ids) != len(sources):
        raise DataError(f"split: {len(ids)} sample ids but {len(sources)} sources; a dataset's "
                        f"'sources' must name the source of every sample")
    val_keys = _held_out([str(s) for s in sources], val_fraction, int(seed), min_val)
    val = [i for i, s in enumerate(sources) if str(s) in val_keys]
    train = [i for i, s in enumerate(sources) if str(s) not in val_keys]
    return train, val


def split_by_group(sources: Sequence[str], groups: Sequence[str], keys: Sequence[str], val_fraction: float = 0.1,
                   seed: int = 0, *, previous: dict[str, Any] | None = None, min_val: int = 1
                   ) -> tuple[list[int], list[int], list[str]]:
    """Train and held-out sample indices, whole groups (patients, studies, cases...) at a time.

    ``groups[i]`` is the joined group of sample ``i`` (:func:`medkit.data.groups.sample_keys`):
    a group is held out when its hash scores below ``val_fraction``, as in :func:`split_by_source`.
    ``previous`` is the ``split.json`` entry of the run this one continues (``--from``) or resumes:
    a group any of whose sources or keys (``sources[i]``, ``keys[i]``) it trained on stays in
    training, one it held out stays held out, and only new groups are split by the hash.

    Returns:
        (train indices, held-out indices, the groups ``previous`` had on both sides: kept in
        training, since held-out data must be data no stage trained on).

    Raises:
        DataError: when the three sequences differ in length.
    """
    if not len(sources) == len(groups) == len(keys):
        raise DataError(f"split: {len(sources)} sources, {len(groups)} groups and {len(keys)} keys; a dataset "
                        f"must name the group of every sample")
    val_groups = _held_out([str(g) for g in groups], val_fraction, int(seed), min_val)
    conflicts: list[str] = []
    if previous:
        was = {side: set(map(str, previous.get(side, []))) | set(map(str, (previous.get("groups") or {}).get(side, [])))
               for side in ("train", "val")}
        trained = {g for g, s, k in zip(groups, sources, keys) if str(s) in was["train"] or str(k) in was["train"]}
        held = {g for g, s, k in zip(groups, sources, keys) if str(s) in was["val"] or str(k) in was["val"]}
        conflicts = sorted(trained & held)
        val_groups = (val_groups | held) - trained
    val = [i for i, g in enumerate(groups) if g in val_groups]
    train = [i for i, g in enumerate(groups) if g not in val_groups]
    return train, val, conflicts


def split_indices(ids: Sequence[str], val_fraction: float = 0.1, *, min_val: int = 1
                  ) -> tuple[list[int], list[int]]:
    """Train/held-out split by an unseeded hash of each sample id (each sample its own source).

    Kept for callers that split samples, not sources; prefer :func:`split_by_source`.
    """
    val_keys = _held_out([str(i) for i in ids], val_fraction, None, min_val)
    val = [k for k, i in enumerate(ids) if str(i) in val_keys]
    return [k for k, i in enumerate(ids) if str(i) not in val_keys], val


def split_three(ids: Sequence[str], *, val_fraction: float, test_fraction: float, origin: str,
                sources: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Deterministic train/val/test split by a hash of each source (default: each id); every split
    gets at least one source.

    Raises:
        ConfigError: for fractions outside (0, 1) or summing to 1 or more.
        DataError: naming ``origin`` when there are fewer than three sources.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in "
                          f"(0, 1) with a sum below 1")
    keys = [str(s) for s in (ids if sources is None else sources)]
    unique = sorted(set(keys))
    if len(unique) < 3:
        raise DataError(f"{origin}: {len(unique)} sample(s) cannot be split into non-empty train/val/test "
                        f"splits; add data (at least 3 samples) or provide official split folders/files")
    order = sorted(unique, key=hash_score)
    n_test = max(1, int(round(test_fraction * len(unique)))) if test_fraction > 0 else 0
    n_val = min(max(1, int(round(val_fraction * len(unique)))), len(unique) - n_test - 1)
    side = {k: "test" for k in order[:n_test]}
    side.update({k: "val" for k in order[n_test:n_test + n_val]})
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, k in enumerate(keys):
        out[side.get(k, "train")].append(i)
    return out
