"""Device, threads and precision: the parts of a run that depend on the machine."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from atlens.config import RuntimeConfig
from atlens.errors import ConfigError
from atlens.models import prefers_channels_last


def select_device(name: str, option: str = "runtime.device") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option} {name}: CUDA is not available on this machine; use {option} cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def configure_threads(threads: int | None) -> None:
    """``runtime.threads`` when given; otherwise what the user set (OMP_NUM_THREADS, torch.set_num_threads)
    or PyTorch's default stays."""
    if threads:
        torch.set_num_threads(threads)


def use_channels_last(cfg: RuntimeConfig, model: torch.nn.Module) -> bool:
    return cfg.channels_last if cfg.channels_last is not None else prefers_channels_last(model)


def amp_dtype(cfg: RuntimeConfig, device: torch.device) -> torch.dtype | None:
    """bf16 (``amp: true`` or ``bf16``) or fp16 autocast on CUDA; None (full precision) elsewhere."""
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.float16 if cfg.amp == "fp16" else torch.bfloat16


@dataclass(frozen=True)
class Precision:
    """The precision of each phase of a training step."""

    device_type: str
    dtype: torch.dtype | None  # None: full precision

    @classmethod
    def of(cls, cfg: RuntimeConfig, device: torch.device) -> Precision:
        return cls(device.type, amp_dtype(cfg, device))

    def training(self) -> contextlib.AbstractContextManager:
        """The training loss's forward."""
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def crafting(self) -> contextlib.AbstractContextManager:
        """Attacks and weight-perturbation ascents: full precision under fp16, whose small input gradients
        would underflow to a zero sign."""
        if self.dtype in (None, torch.float16):
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> dict[str, str]:
        name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return {"training_loss": name, "training_attack": "fp32" if name == "fp16" else name}


def grad_scaler(cfg: RuntimeConfig, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its gradients underflow without it); disabled, a pass-through, otherwise."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(cfg, device) == torch.float16)
