"""``trainer.amp=bf16``: the values it takes, a bf16 run that trains and resumes bit for bit (one
thread), and 200 tiny steps within the documented tolerance of fp32 (docs/configuration.md)."""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch

from medkit.api.errors import ConfigError
from medkit.models.precision import amp_dtype, check_amp_device

STEPS, EVERY, CRASH = 6, 3, 5
#: docs/configuration.md, "trainer.amp": the step-200 loss of a bf16 run is within this fraction
#: of the fp32 run's (measured: 1.6e-5 and 1.8e-5 on seeds 0 and 1)
BF16_LOSS_RTOL = 1e-3


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics" / "steps.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("value, expected", [(False, None), (None, None), (True, torch.bfloat16),
                                             ("bf16", torch.bfloat16), ("BFloat16", torch.bfloat16)])
def test_amp_values(value: Any, expected: torch.dtype | None) -> None:
    assert amp_dtype(value) is expected
    assert bool(value) == (expected is not None), "bool(trainer.amp) must agree with what it turns on"


@pytest.mark.parametrize("value, words", [("fp16", "GradScaler"), ("half", "GradScaler"), ("maybe", "false (fp32) or bf16"),
                                          ("fp32", "false (fp32) or bf16")])
def test_unsupported_amp_is_one_line_naming_the_key(value: str, words: str) -> None:
    from medkit.config.compose import Selection, compose
    from medkit.testing.synthetic import use_synthetic_host

    with pytest.raises(ConfigError) as info:
        compose(Selection(modalities=["synth_a"], strategy="sequential", preset="tiny",
                          overrides=[f"trainer.amp={value}"]), host=use_synthetic_host())
    message = str(info.value)
    assert "\n" not in message and f"trainer.amp={value}" in message and words in message


def test_bf16_on_a_device_autocast_cannot_serve_is_refused() -> None:
    check_amp_device(torch.bfloat16, torch.device("cpu"))
    check_amp_device(None, torch.device("meta"))
    with pytest.raises(ConfigError, match="trainer.amp=bf16: autocast on meta"):
        check_amp_device(torch.bfloat16, torch.device("meta"))


def _run(run_dir: Path, demo: Path, *, amp: str, crash_at: int | None = None, resume: bool = False) -> int:
    """Run (or resume) a one-stage synthetic run in a forked child at one thread; a ``crash_at`` step
    kills it when that step is reported (after the checkpoint at step ``EVERY``). Returns the exit code."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            torch.set_num_threads(1)
            from medkit.api import progress

            class Crash(progress.NullReporter):
                def update(self, completed: int, metrics: dict[str, Any]) -> None:
                    if completed == crash_at:
                        os._exit(9)

            progress.NullReporter = Crash  # type: ignore[misc]  # this child only
            from medkit.testing.synthetic import run_synthetic, use_synthetic_host

            if resume:
                from medkit.engine.engine import Engine, load_config

                Engine(load_config(run_dir), run_dir, components=use_synthetic_host(), reporter=Crash(),
                       resume=True).run()
            else:
                run_synthetic(run_dir, "sequential", ("synth_2d",), max_steps=STEPS, demo_dir=demo,
                              overrides=(f"trainer.amp={amp}", f"trainer.checkpoint_every={EVERY}"))
            code = 0
        except BaseException:  # noqa: BLE001 - report and exit the child, never return into pytest
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_bf16_run_trains_and_resumes_bit_identically(tmp_path: Path) -> None:
    from medkit.storage.files import load_tensors

    demo = tmp_path / "demo"
    assert _run(tmp_path / "full", demo, amp="bf16") == 0
    assert _run(tmp_path / "fp32", demo, amp="false") == 0
    assert _run(tmp_path / "crash", demo, amp="bf16", crash_at=CRASH) == 9
    manifest = json.loads((tmp_path / "crash" / "manifest.json").read_text())
    assert not manifest["finished"] and manifest["current"]["step"] == EVERY
    assert _run(tmp_path / "crash", demo, amp="bf16", resume=True) == 0

    full, fp32 = _losses(tmp_path / "full"), _losses(tmp_path / "fp32")
    assert full[0] != fp32[0], "the bf16 run's forward ran in bf16 (its first loss is not fp32's)"
    assert _losses(tmp_path / "crash") == full, "the resumed run logs the very same losses"
    a, b = load_tensors(tmp_path / "full" / "model.safetensors"), load_tensors(tmp_path / "crash" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.dtype == torch.float32 for v in a.values() if v.is_floating_point()), "fp32 master weights"


@pytest.mark.slow
def test_200_bf16_steps_end_within_tolerance_of_fp32(tmp_path: Path) -> None:
    from medkit.testing.synthetic import run_synthetic

    torch.set_num_threads(1)
    fast = ("trainer.log_every=50", "trainer.eval_batches=0", "trainer.probe_linear_steps=0", "trainer.probe_knn_k=0")
    runs = {amp: _losses(run_synthetic(tmp_path / amp, "sequential", ("synth_2d",), max_steps=200,
                                       overrides=(f"trainer.amp={amp}", *fast), demo_dir=tmp_path / "demo"))
            for amp in ("false", "bf16")}
    fp32, bf16 = runs["false"], runs["bf16"]
    assert bf16[0] != fp32[0], "the bf16 run's forward ran in bf16"
    assert sum(bf16[-10:]) < sum(bf16[:10]), "the bf16 run trains"
    assert abs(bf16[-1] - fp32[-1]) <= BF16_LOSS_RTOL * fp32[-1], (bf16[-1], fp32[-1])
