"""Two gloo ranks: each computes a shard of the features, rank 0 alone gathers them and runs the
k-means, and every rank keeps the buffer one process selects."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RANK_SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from types import SimpleNamespace
    import torch
    import torch.distributed as dist
    from medkit_plugin_medcoss import kmeans
    from medkit_plugin_medcoss.buffer import build_buffer

    out = Path(sys.argv[1])
    if int(sys.argv[2]) > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    g = torch.Generator().manual_seed(0)
    table = torch.randn(40, 6, generator=g) + 5 * torch.randint(0, 4, (40, 1), generator=g).float()
    asked, fits = [], []
    fit = kmeans.fit

    def counted(features, *args, **kw):
        fits.append(int(features.shape[0] if isinstance(features, torch.Tensor) else features.num_rows))
        return fit(features, *args, **kw)

    kmeans.fit = counted

    def features(modality, indices, **kw):
        asked.extend(int(i) for i in indices)
        return table[list(indices)]

    ids = [f"s{i:02d}" for i in range(40)]
    ctx = SimpleNamespace(rank=rank, world_size=world, device=torch.device("cpu"), run_dir=out,
                          encoder=SimpleNamespace(embed_dim=6), batch_size=4, stage_index=0,
                          train_indices={"m": list(range(0, 40, 2)) + [1, 3]},
                          train_sets={"m": SimpleNamespace(ids=ids)}, features=features)
    entry, centroids = build_buffer(ctx, "m", buffer_ratio=0.2, num_center=0.1, iters=20, batch=5, seed=0,
                                    method="lloyd", spill_threshold=10, spill_dir=None)
    (out / f"rank{rank}-of{world}.json").write_text(json.dumps(
        {"ids": entry.ids, "asked": asked, "centroids": centroids.tolist(), "fits": fits,
         "entry": entry.to_json()}))
    if dist.is_initialized():
        dist.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_ranks_shard_features_and_rank_0_alone_selects_the_buffer(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), "2"], env={**env, "RANK": str(r)},
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    single = subprocess.run([sys.executable, str(script), str(tmp_path), "1"], capture_output=True, text=True,
                            env={k: v for k, v in env.items() if k != "WORLD_SIZE"}, timeout=120)
    errors = [p.communicate(timeout=120)[1] for p in procs]
    if any(p.returncode for p in procs) or single.returncode:
        pytest.fail("rank failed:\n" + "\n".join(errors) + single.stderr)
    r0, r1, one = (json.loads((tmp_path / name).read_text())
                   for name in ["rank0-of2.json", "rank1-of2.json", "rank0-of1.json"])
    assert r0["ids"] == r1["ids"] == one["ids"] and len(one["ids"]) == 4  # K = 2 clusters × k = 2
    assert r0["centroids"] == r1["centroids"] == one["centroids"]
    assert r0["entry"] == r1["entry"] == one["entry"]  # inertia and K, k included
    assert one["fits"] == [22] and r0["fits"] == [22] and r1["fits"] == []  # k-means once, on rank 0
    assert set(r0["asked"]).isdisjoint(r1["asked"])  # each rank computed only its shard
    assert sorted(r0["asked"] + r1["asked"]) == sorted(one["asked"]) and len(one["asked"]) == 22
    assert not list(tmp_path.glob(".medkit-features-*"))  # 22 > spill_threshold: spilled, then removed
