"""The benchmarks at toy size: bench/continual.py and bench/continual_multi.py --quick run end to end,
write strict JSON and keep their checks (PackNet's first stage is bit-identical, so its forgetting is
exactly 0; the split is by source; the multi-dimension table has every promised row and column)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_continual_bench_runs_and_keeps_its_checks(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "continual.py"), "--steps", "6", "--seeds", "0,1",
         "--strategies", "sequential,packnet", "--samples", "96", "--val-fraction", "0.3",
         "--probe-train", "48", "--probe-steps", "3", "--refit-steps", "2", "--batch-size", "8", "--jobs", "1",
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _strict((out / "continual.json").read_text(encoding="utf-8"))
    assert isinstance(result, dict)
    first = result["modalities"][0]
    packnet = [r for r in result["runs"] if r["strategy"] == "packnet"]
    assert len(packnet) == 2
    for run in packnet:
        for metric in ("linear_acc", "knn_acc", "pretext_loss"):
            # PackNet freezes the first stage's weights: its values after every later stage are
            # the very same numbers, not merely close
            assert run["metrics"][metric]["forgetting_first_per"][first] == 0.0, (metric, run["seed"])
    assert set(result["versus_sequential"]) == {"packnet"}
    split = json.loads((Path(packnet[0]["run_dir"]) / "metrics" / "split.json").read_text())["modalities"]
    for mod, sides in split.items():
        assert sides["val"] and not set(sides["train"]) & set(sides["val"]), mod
    assert (out / "continual.md").read_text(encoding="utf-8").startswith("# Continual benchmark")
    assert (out / "continual_matrices.png").stat().st_size > 0


@pytest.mark.slow
def test_mae_step_bench_measures_a_real_step(tmp_path: Path) -> None:
    out = tmp_path / "mae_step.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mae_step.py"), "--preset", "tiny", "--cases", "2d,3d", "--batch", "2",
         "--modes", "fp32", "--reps", "1", "--ceiling-n", "128", "--ceiling-seconds", "0.1", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _strict(out.read_text(encoding="utf-8"))["results"]  # type: ignore[index]
    assert [r["case"] for r in results] == ["2d", "3d"]
    for r in results:
        assert "error" not in r, r.get("error")
        # FLOPs counted by torch's counter, a measured step and ceiling: all positive and finite
        assert r["gflop_per_step"] > 0 and r["median"]["step_s"] > 0 and r["median"]["ceiling_gflops"] > 0
        assert 0 < r["median"]["pct_of_ceiling"] < 1000


@pytest.mark.slow
def test_mae_step_bench_runs_each_mode_against_its_own_ceiling(tmp_path: Path) -> None:
    """fp32, bf16 and bf16 + compile side by side at toy size (aot_eager: no C++ compiler or long
    compile in a test; the bench's default is inductor): strict JSON, one table line per mode, each
    mode's ceiling in its own dtype, and the reference said to be a recorded figure or absent."""
    out = tmp_path / "mae_step.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mae_step.py"), "--preset", "tiny", "--cases", "2d", "--batch", "2",
         "--reps", "1", "--warmup", "0", "--ceiling-n", "128", "--ceiling-seconds", "0.1",
         "--modes", "fp32,bf16,bf16+compile", "--compile-backend", "aot_eager", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _strict(out.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    results = doc["results"]
    assert [(r["case"], r["mode"]) for r in results] == [("2d", "fp32"), ("2d", "bf16"), ("2d", "bf16+compile")]
    for r in results:
        assert "error" not in r, r.get("error")
        assert r["ceiling_dtype"] == ("bf16" if r["mode"].startswith("bf16") else "fp32")
        assert r["compile"] == r["mode"].endswith("+compile") and r["amp"] == r["mode"].startswith("bf16")
        assert r["median"]["step_s"] > 0 and 0 < r["median"]["pct_of_ceiling"] < 1000
        # not the recorded settings (tiny, batch 2): no comparison is made up
        assert r["reference"] is None and r["median"]["speedup_vs_reference"] is None
    assert results[1]["reps"][0]["loss"] != results[0]["reps"][0]["loss"], "the bf16 row ran in bf16"
    table = proc.stdout.split("\n\n")[1].splitlines()
    assert table[0].split()[:3] == ["case", "mode", "device"] and set(table[1]) == {"-"}
    assert [line.split()[1] for line in table[2:]] == ["fp32", "bf16", "bf16+compile"]
    assert "reference: none for these settings" in proc.stdout


def test_the_ewc_sweep_reads_no_sample_of_a_reported_run(tmp_path: Path) -> None:
    """λ is tuned on other procedural objects than every reported run's: no id, no source and no
    image of the sweep's data is in the evaluation data (training or held-out)."""
    import argparse

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import continual
        import continual_data
    finally:
        sys.path.remove(str(ROOT / "bench"))
    args = argparse.Namespace(ewc_grid="1,100", sweep_seed=100, steps=5)
    jobs = continual.sweep_jobs(tmp_path, args)
    assert [j["lam"] for j in jobs] == [1.0, 100.0]
    for m in continual.MODALITIES[:2]:
        key = f"modality.{m}.source_offset="
        offsets = {int(e.split("=")[1]) for j in jobs for e in j["extra"] if e.startswith(key)}
        assert offsets == {continual.SWEEP_SOURCE_OFFSET}
        reported = continual_data.ProceduralModality(m, 96)
        sweep = continual_data.ProceduralModality(m, 96, source_offset=continual.SWEEP_SOURCE_OFFSET)
        a = reported.dataset(reported.demo_data(tmp_path / "a" / m), train=False)
        b = sweep.dataset(sweep.demo_data(tmp_path / "b" / m), train=False)
        assert not set(a.ids) & set(b.ids) and not set(a.sources) & set(b.sources)
        assert not any(torch.equal(a.load(i)["input"], b.load(i)["input"]) for i in range(len(a)))
    assert "refit" in continual.sweep_ewc.__doc__


# sha256 over (relative path, bytes) of every file write_modality(m, root, 2, offset=5) writes, computed
# from bench/multi_data.py before the data variants were added: the default data must never change.
V1_HASHES = {
    "report": "4c377a4a71b1864718c9c9d4409625d6b590ffaf7e05135b5d28482e670dd520",
    "xray": "de5892391b2de842fb1fb2fe8d4e3a586bd9df267563e204227eb60d965d1a87",
    "ct": "35fbe1025f3714e2f87df27dc6315f0e9fe2785038533fd8bb3b1ca3c6264a80",
    "mri": "d17a81f9de44e8d5cc728465dd099e7b43354b83289d33166d85aae01a25828f",
}


def _tree_hash(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_multi_data_v1_is_unchanged_and_v2_differs_deterministically(tmp_path: Path) -> None:
    """bench/multi_data.py: the default variant v1 writes the same bytes it always did; v2 writes other
    images and volumes (reports are shared), the same bytes twice; an unknown variant is refused."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import multi_data
    finally:
        sys.path.remove(str(ROOT / "bench"))
    for m, want in V1_HASHES.items():
        assert _tree_hash(multi_data.write_modality(m, tmp_path / "v1" / m, 2, offset=5)) == want, m
        assert _tree_hash(multi_data.write_modality(m, tmp_path / "v1b" / m, 2, 5, "v1")) == want, m
        a = _tree_hash(multi_data.write_modality(m, tmp_path / "v2" / m, 2, 5, "v2"))
        b = _tree_hash(multi_data.write_modality(m, tmp_path / "v2b" / m, 2, 5, "v2"))
        assert a == b, m
        assert (a == want) == (m == "report"), m
    with pytest.raises(ValueError, match="variant"):
        multi_data.write_modality("xray", tmp_path / "v3", 2, 5, "v3")


@pytest.mark.slow
def test_continual_multi_quick_writes_strict_json_and_the_promised_table(tmp_path: Path) -> None:
    """bench/continual_multi.py --quick: the report, xray, ct and mri plugins read the procedural files; the
    JSON is strict (no NaN/Infinity) and holds every promised row × metric × column, the chance and ceiling
    beside the probes, and each of the paper's findings with a verdict."""
    out = tmp_path / "multi"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "continual_multi.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _strict((out / "continual_multi.json").read_text(encoding="utf-8"))
    assert isinstance(result, dict)
    modalities = {"report", "xray", "ct", "mri"}
    expected = {"tfs@forward", "sequential@forward", "sequential@reverse", *(f"single_{m}@single" for m in modalities)}
    assert set(result["table"]) == expected
    for key, row in result["table"].items():
        assert row["seeds"] == [0, 1], key
        for metric in ("linear_acc", "knn_acc", "refit_loss", "pretext_loss"):
            cols = row[metric]
            assert {"final_mean", "forgetting", "bwt", "fwt", "final_per"} <= set(cols), (key, metric)
            assert set(cols["final_per"]) == ({key.split("@")[0][7:]} if key.startswith("single_") else modalities)
            if metric in ("linear_acc", "knn_acc"):
                assert ("plasticity" in cols) != key.startswith("single_"), (key, metric)
                for s in cols["final_per"].values():
                    assert s["n"] == 2 and 0.0 <= s["mean"] <= 1.0, (key, metric)
    assert result["chance"] == 0.25 and set(result["ceiling"]) == modalities
    assert all(result["ceiling"][m]["linear_acc"]["n"] == 2 for m in modalities)
    # the split is by source, with held-out sources for every modality
    assert set(result["held_out"]) == modalities and all(v["sources"] > 0 for v in result["held_out"].values())
    run = next(r for r in result["runs"] if r["row"] == "sequential" and r["order"] == "reverse")
    assert run["values"]["linear_acc"]["modalities"] == ["mri", "ct", "xray", "report"]
    split = json.loads((Path(run["run_dir"]) / "metrics" / "split.json").read_text())["modalities"]
    for mod, sides in split.items():
        assert sides["val"] and not set(sides["train"]) & set(sides["val"]), mod
    verdicts = {"supported", "contradicted", "not resolved at this size"}
    assert len(result["findings"]) == 4
    assert all(f["verdict"] in verdicts or f["verdict"].startswith("not tested") for f in result["findings"])
    md = (out / "continual_multi.md").read_text(encoding="utf-8")
    assert md.startswith("# Continual benchmark over 1D/2D/3D") and "| ceiling |" in md
