"""Known answers for the k-means buffer selection, the chunked distances and the fp16 spill store."""

from __future__ import annotations

from medkit_plugin_medcoss.buffer import buffer_sizes

from pathlib import Path

import pytest
import torch

from medkit.api import ConfigError
from medkit_plugin_medcoss import distances, kmeans, lloyd
from medkit_plugin_medcoss.buffer import select_buffer
from medkit_plugin_medcoss.store import FeatureStore

CENTRES = [(0.0, 0.0), (50.0, 0.0), (0.0, 50.0)]
# offsets sum to zero, so each blob's mean is its centre; (±0.1, 0) are the two nearest members
OFFSETS = [(0.1, 0.0), (-0.1, 0.0), (0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0),
           (2.0, 2.0), (-2.0, -2.0), (2.0, -2.0), (-2.0, 2.0)]


def blobs() -> tuple[torch.Tensor, list[str], set[str]]:
    """30 points in 3 blobs, rows shuffled; returns features, ids and the ids expected in the buffer."""
    rows, ids, nearest = [], [], set()
    for b, (cx, cy) in enumerate(CENTRES):
        for j, (dx, dy) in enumerate(OFFSETS):
            rows.append((cx + dx, cy + dy))
            ids.append(f"blob{b}/p{j}")
            if j < 2:
                nearest.add(f"blob{b}/p{j}")
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(5))
    x = torch.tensor(rows, dtype=torch.float32)[perm]
    return x, [ids[int(i)] for i in perm], nearest


def test_buffer_sizes_follow_the_spec() -> None:
    assert buffer_sizes(377_000, 0.05, 0.01, "fixed") == (3770, 5)
    assert buffer_sizes(21, 0.05, 0.01, "fixed") == (1, 5)  # K and k never drop to 0
    assert buffer_sizes(300, 0.03, 0.01, "fixed") == (3, 3)  # 0.03 / 0.01 = 2.9999999999999996
    assert buffer_sizes(100, 0.29, 0.29, "fixed") == (29, 1)  # 0.29 * 100 = 28.999999999999996
    with pytest.raises(ConfigError, match="buffer_ratio"):
        buffer_sizes(10, 0.0, 0.01)


@pytest.mark.parametrize("method", ["lloyd", "minibatch"])
def test_blob_selection_picks_the_members_nearest_each_centre(method: str) -> None:
    x, ids, expected = blobs()
    sel = select_buffer(x, buffer_ratio=0.2, num_center=0.1, seed=0, method=method, batch=7)
    assert (sel.num_clusters, sel.per_cluster) == (3, 2)
    assert {ids[r] for r in sel.rows} == expected and len(sel.rows) == 6
    got = sorted(sel.centroids.tolist(), key=lambda c: [round(v, 3) for v in c])  # float noise ≠ order
    assert torch.allclose(torch.tensor(got), torch.tensor(sorted(CENTRES)), atol=1e-4)


def test_selection_is_identical_for_the_same_seed() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 8, generator=g) + 4 * torch.randint(0, 6, (500, 1), generator=g).float()
    a = select_buffer(x, buffer_ratio=0.05, num_center=0.02, seed=3, batch=64)
    b = select_buffer(x, buffer_ratio=0.05, num_center=0.02, seed=3, batch=64)
    assert a.rows == b.rows and torch.equal(a.centroids, b.centroids) and a.inertia == b.inertia
    assert (a.num_clusters, a.per_cluster) == (10, 2) and len(a.rows) <= 20


def test_chunked_distances_equal_the_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(37, 5, generator=g), torch.randn(4, 5, generator=g)
    direct = torch.cdist(x.double(), c.double()) ** 2
    assert torch.allclose(kmeans.chunked_sq_distances(x, c, batch=8).double(), direct, atol=1e-4)
    out = kmeans.assign(x, c, batch=6)
    assert torch.equal(out.labels, direct.argmin(1))
    assert torch.allclose(out.sq_dist.double(), direct.min(1).values, atol=1e-5)
    assert out.inertia == pytest.approx(float(direct.min(1).values.sum()), rel=1e-5)


def test_distance_blocks_over_centroids_keep_the_first_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distances, "MAX_BLOCK", 6)  # 3 rows → blocks of 2 centroids (read where _nearest is)
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [5.0, 5.0], [9.0, 1.0], [9.0, -1.0]])
    out = kmeans.assign(x, c, batch=3)
    assert out.labels.tolist() == [0, 2, 3]  # ties (0 vs 1, 3 vs 4) go to the first centroid
    assert out.sq_dist.tolist() == [1.0, 0.0, 1.0]


def test_select_nearest_known_answer() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 1])
    dist = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0, 0.0, 4.0])
    # cluster 0 → rows 1, 2; cluster 1 → rows 4, 6 (tie at 4.0: lower row first); cluster 2 → row 5 only
    assert kmeans.select_nearest(labels, dist, 2, 3).tolist() == [1, 2, 4, 6, 5]
    assert kmeans.select_nearest(labels, dist, 1, 4).tolist() == [1, 4, 5]  # cluster 3 is empty


def test_empty_cluster_moves_to_the_farthest_row() -> None:
    data = torch.tensor([[0.0], [1.0], [10.0]])
    centroids = torch.tensor([[0.5], [100.0]])
    labels, sq, sums, counts, far = lloyd._lloyd_pass(data, centroids, batch=2)
    assert counts.tolist() == [3, 0] and far.tolist()[0] == 2
    new = lloyd._update(data, centroids, sums, counts, far)
    assert torch.allclose(new, torch.tensor([[11.0 / 3.0], [10.0]]))


def test_kmeans_plus_plus_is_seeded_and_spreads_out() -> None:
    x, _, _ = blobs()
    a = kmeans.kmeans_plus_plus(x, 3, generator=torch.Generator().manual_seed(0))
    b = kmeans.kmeans_plus_plus(x, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    blob_of = torch.cdist(a, torch.tensor(CENTRES)).argmin(1)
    assert sorted(blob_of.tolist()) == [0, 1, 2]  # one seed per blob


def test_spilled_store_round_trips_in_fp16_and_cleans_up(tmp_path: Path) -> None:
    x, ids, expected = blobs()
    with FeatureStore(30, 2, spill_threshold=10, spill_dir=tmp_path) as store:
        assert store.spilled and store.path is not None and store.path.exists()
        for s in range(0, 30, 8):
            store.write(s, x[s:s + 8])
        back = torch.cat([rows for _, rows in store.chunks(7)])
        assert torch.equal(back, x.half().float())
        assert torch.equal(store.rows(torch.tensor([5, 1])), x[[5, 1]].half().float())
        sel = select_buffer(store, buffer_ratio=0.2, num_center=0.1, seed=0, batch=4)
        assert {ids[r] for r in sel.rows} == expected
        folder = store.path.parent
    assert not folder.exists()
    with FeatureStore(30, 2, spill_threshold=30) as mem:
        assert not mem.spilled and mem.path is None


def _wide_blobs(per: int = 40, dim: int = 128, blobs: int = 6, seed: int = 0) -> torch.Tensor:
    """``blobs`` well-separated clusters in ``dim`` dimensions (wide enough for the bf16 seeding path)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(blobs, dim, generator=g) * 20.0 + 100.0  # far from the origin on purpose
    return torch.cat([c + torch.randn(per, dim, generator=g) for c in centres])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_seeding_in_either_precision_puts_one_seed_in_each_blob(dtype: torch.dtype) -> None:
    x = _wide_blobs()
    seeds = kmeans.kmeans_plus_plus(x, 6, generator=torch.Generator().manual_seed(0), dtype=dtype)
    blob_of = torch.cdist(seeds.double(), x.double()).argmin(1) // 40
    assert sorted(blob_of.tolist()) == list(range(6))
    assert all(any(torch.equal(s, r) for r in x) for s in seeds)  # seeds are rows of x, unrounded


def test_fit_returns_the_exact_nearest_centroid_and_distance_of_every_row() -> None:
    x = _wide_blobs(per=50, blobs=8, seed=1)
    res = kmeans.fit(x, 8, seed=0, batch=64)
    direct = torch.cdist(x.double(), res.centroids.double()) ** 2  # [N, K]
    assert res.converged and torch.equal(res.labels, direct.argmin(1))
    assert torch.allclose(res.sq_dist.double(), direct.min(1).values, rtol=1e-5, atol=1e-3)
    assert set(res.seconds) == {"seeding", "iterations"}
