"""A fine-tune leaves exactly its own files: no temp copy of the weights after checkpoints that share
an inode with ``best.safetensors``, no staging folder after a checkpoint that hit a full disk, and
none of an earlier crash's leftovers after a resume."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

TINY = ["encoder.depth=2", "encoder.embed_dim=48", "encoder.num_heads=3"]
EVERY_STEP = ["trainer.batch_size=4", "trainer.val_every=1", "trainer.checkpoint_every=1"]
ARGS = ["--task", "classification", "--modality", "xray", "--scratch", "--preset", "tiny", "--max-steps", "3"]

#: Everything a finished fine-tune holds outside ``pictures/`` and ``tokenizers/`` (which belong to
#: the task and the backbone, not to the checkpointing).
FINISHED = [".medkit.lock", "best.safetensors", "checkpoint", "checkpoint/best.safetensors",
            "checkpoint/model.safetensors", "checkpoint/optimizer.json", "checkpoint/optimizer.safetensors",
            "checkpoint/rng.safetensors", "checkpoint/trainer.json", "config.yaml", "manifest.json", "metrics",
            "metrics.json", "metrics/steps.jsonl", "metrics/val.jsonl", "model.safetensors", "pictures"]


def _listing(run: Path) -> list[str]:
    """Every name under ``run`` (links not followed), less the task's pictures and tokenizer assets."""
    out = []
    for here, dirs, names in os.walk(run):
        rel = Path(here).relative_to(run)
        if rel.parts and rel.parts[0] in ("pictures", "tokenizers"):
            continue
        out += [(rel / n).as_posix() for n in dirs + names]
    return sorted(p for p in out if p != "tokenizers")


def _finetune(medkit, run: Path):
    return medkit("finetune", *ARGS, "--run-dir", str(run), *TINY, *EVERY_STEP)


def test_a_finetune_checkpointing_every_step_leaves_no_temp_file(medkit, tmp_path: Path) -> None:
    from medkit.storage.jsonl import read_jsonl

    run = tmp_path / "ft"
    res = _finetune(medkit, run)
    assert res.exit_code == 0, res.output
    assert _listing(run) == FINISHED, "no .best.safetensors.XXXXXXXX.tmp, no staging folder"
    assert [r["step"] for r in read_jsonl(run / "metrics" / "steps.jsonl")] == [1, 2, 3]
    best = (run / "best.safetensors").stat()
    assert best.st_ino == (run / "checkpoint" / "best.safetensors").stat().st_ino and best.st_nlink == 2


def test_a_checkpoint_on_a_full_disk_leaves_no_staging_and_resumes_clean(medkit, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from medkit.storage import files
    from medkit.storage.jsonl import read_jsonl

    run, real_save = tmp_path / "full", files.save_optimizer
    calls = {"n": 0}

    def save_optimizer(directory, opt):  # the second checkpoint's staging folder fills the disk
        calls["n"] += 1
        if calls["n"] == 2:
            real_fsync = os.fsync

            def full(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(os, "fsync", full)
            try:
                return real_save(directory, opt)
            finally:
                monkeypatch.setattr(os, "fsync", real_fsync)
        return real_save(directory, opt)

    monkeypatch.setattr(files, "save_optimizer", save_optimizer)
    res = _finetune(medkit, run)
    monkeypatch.setattr(files, "save_optimizer", real_save)
    assert res.exit_code == 1 and "No space left on device (ENOSPC)" in res.output, res.output
    left = _listing(run)
    assert not [p for p in left if p.startswith(".checkpoint-") or p.endswith(".tmp")], left
    # the first checkpoint, whole; nothing of the failed second one; no final files yet
    assert left == [p for p in FINISHED if p not in ("metrics.json", "model.safetensors", "pictures")], left

    # what a SIGKILL in the middle of a write or a checkpoint leaves (no handler runs then)
    (run / ".best.safetensors.abcd1234.tmp").write_bytes(b"a full-size copy")
    (run / "metrics" / ".val.jsonl.x_9yz0ab.tmp").write_bytes(b"{")
    (run / ".checkpoint-q1w2e3r4").mkdir()
    (run / ".checkpoint-q1w2e3r4" / "model.safetensors").write_bytes(b"half")
    (run / "notes.tmp").write_bytes(b"the user's own")  # not medkit's pattern: kept
    res = medkit("finetune", "--resume", str(run))
    assert res.exit_code == 0, res.output
    assert _listing(run) == sorted(FINISHED + ["notes.tmp"])
    assert [r["step"] for r in read_jsonl(run / "metrics" / "steps.jsonl")] == [1, 2, 3]
