"""Numeric precision: which autocast dtype ``amp`` settings mean on a device, and whether a CPU has bf16.

A leaf module: training, evaluation and the API all choose their precision here.
"""

from __future__ import annotations

import contextlib

import torch

from atlens.errors import ConfigError


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm) through oneDNN; without
    it, bf16 autocast is emulated and several times slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


NO_NATIVE_BF16 = ("this CPU has no native bf16 arithmetic (AVX512-BF16, AMX or Arm BF16): bf16 would be emulated "
                  "and slower than fp32, so fp32 runs instead (runtime.amp: bf16-emulated forces it, for numerics)")


def amp_dtype(amp: bool | str, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype ``runtime.amp`` asks for on ``device`` (None: full precision), and why it differs
    from what was asked, if it does. ``true``/``bf16``: bf16 on CUDA and on CPUs that have it; ``fp16``: CUDA,
    with loss scaling; ``bf16-emulated``: bf16 even where the CPU lacks it (slow; for studying numerics)."""
    if not amp:
        return None, None
    if device.type == "cuda":
        return (torch.float16 if amp == "fp16" else torch.bfloat16), None
    if amp == "fp16":
        raise ConfigError("runtime.amp fp16 is CUDA's half precision (with loss scaling); on a CPU use bf16")
    if amp == "bf16-emulated" or cpu_has_bf16():
        return torch.bfloat16, None
    return None, NO_NATIVE_BF16


NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device_type``; a no-op for None (full precision)."""
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


