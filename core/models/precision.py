"""Mixed precision of the training forward: what ``trainer.amp`` asks for, checked, and its autocast.

``trainer.amp`` is ``false`` (fp32), or ``bf16`` (``true`` and ``bfloat16`` mean the same): the
forward runs under ``torch.autocast(device_type, dtype=torch.bfloat16)`` on the device in use (CPU
or CUDA). Only the operations autocast lists run in bf16 (matmuls, convolutions, attention);
reductions, normalisation statistics and losses autocast keeps in fp32, and the step casts the loss
to fp32 before its backward. The weights, their gradients and the optimizer state stay fp32 (the
"master weights": autocast casts a copy of each weight per operation; nothing is stored in bf16).

bf16 needs no loss scaling: it has fp32's 8-bit exponent, so gradients that fit fp32 do not
underflow, and there is no ``GradScaler`` (whose skipped steps and scale state would also have to
be checkpointed for an exact resume). fp16 autocast does need one, and medkit does not run one, so
``trainer.amp=fp16`` is refused (on every device) rather than trained without it.
"""

from __future__ import annotations

import functools
import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from medkit.api.errors import ConfigError

log = logging.getLogger(__name__)

#: The strings ``trainer.amp`` takes besides ``false``/``true`` (case-insensitive). Each turns bf16 on,
#: so ``bool(value)`` of an accepted value says whether autocast is on (no string means "off").
_ON = ("true", "bf16", "bfloat16")
_FP16 = ("fp16", "float16", "half")


def amp_dtype(value: Any, *, where: str = "") -> torch.dtype | None:
    """The autocast dtype ``trainer.amp`` asks for: ``None`` (fp32) or ``torch.bfloat16``.

    Args:
        value: ``trainer.amp``: ``False``/``None``, ``True``, ``"bf16"``, ``"bfloat16"`` (or a dtype);
            the booleans are what the config holds for ``trainer.amp=false`` / ``true``.
        where: a prefix for the message (the file a config came from).

    Raises:
        ConfigError: fp16 (needs a GradScaler medkit does not run) or an unknown value, in one line.
    """
    if value is None or value is False or value == torch.float32:
        return None
    if value is True or value == torch.bfloat16:
        return torch.bfloat16
    text = str(value).strip().lower()
    if text in _ON:
        return torch.bfloat16
    if text in _FP16 or value == torch.float16:
        raise ConfigError(f"{where}trainer.amp={value}: float16 autocast needs loss scaling (a GradScaler), "
                          f"which medkit does not run; use trainer.amp=bf16 (same speed on CPUs with AMX and "
                          f"GPUs from Ampere on, fp32's range, no scaling) or trainer.amp=false")
    raise ConfigError(f"{where}trainer.amp={value}: not a precision medkit trains in; use false (fp32) or bf16 "
                      f"(true means bf16)")


def check_amp_device(dtype: torch.dtype | None, device: torch.device) -> None:
    """Refuse bf16 autocast on a device that cannot run it; note a CPU that only emulates it.

    Raises:
        ConfigError: bf16 on a CUDA device without bf16 support (compute capability below 8.0), or
            on a device type other than CPU and CUDA.
    """
    if dtype is None:
        return
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            name = torch.cuda.get_device_name(device)
            raise ConfigError(f"trainer.amp=bf16: {name} ({device}) has no native bfloat16 (compute capability "
                              f"below 8.0); use trainer.amp=false")
    elif device.type != "cpu":
        raise ConfigError(f"trainer.amp=bf16: autocast on {device.type} is not supported by medkit; use CPU or "
                          f"CUDA, or trainer.amp=false")
    elif not _cpu_has_bf16():
        _warn_emulated_bf16()


@functools.lru_cache(maxsize=1)
def _warn_emulated_bf16() -> None:
    """Once per process (every training loop builds its own step)."""
    log.warning("trainer.amp=bf16 on a CPU without AMX or AVX512-BF16: its bf16 matmuls are emulated and "
                "slower than fp32 (bench/mae_step.py measures both ceilings); trainer.amp=false is faster here")


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 matmul instructions (Linux ``/proc/cpuinfo`` flags; ``True`` when
    they cannot be read, so nothing is claimed without evidence)."""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), None)
    except OSError:
        return True
    if flags is None:
        return True
    words = set(flags.split())
    return bool(words & {"amx_bf16", "avx512_bf16"})


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """``torch.autocast`` on ``device``'s type to ``dtype`` (disabled when ``dtype`` is ``None``)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
