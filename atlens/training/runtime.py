"""Device, threads and precision: the parts of a run that depend on the machine."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass

import torch

from atlens.config import RuntimeConfig
from atlens.errors import ConfigError
from atlens.models import prefers_channels_last
from atlens.precision import NAMES, amp_dtype, autocast


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


def machine(device: torch.device) -> dict[str, object]:
    """What a run's wall times were measured on: the processor (or GPU), its vector ISA, the threads, torch."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:  # Linux names the model here
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    found = {"cpu": cpu, "cores": os.cpu_count(), "isa": torch.backends.cpu.get_cpu_capability(),
             "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(device)
    return found


def configure_threads(threads: int | None) -> None:
    """``runtime.threads`` when given; otherwise what the user set (OMP_NUM_THREADS, torch.set_num_threads)
    or PyTorch's default stays."""
    if threads:
        torch.set_num_threads(threads)


def use_channels_last(cfg: RuntimeConfig, model: torch.nn.Module) -> bool:
    """``runtime.channels_last`` when set, otherwise what suits the model (NHWC for convolutional networks)."""
    return cfg.channels_last if cfg.channels_last is not None else prefers_channels_last(model)


@dataclass(frozen=True)
class Precision:
    """The precision of each phase: the training step's attack and loss, the evaluation's attacks. The
    judgement of an attacked example and the attribution (CAS) always run in fp32; weights, BatchNorm
    statistics, optimiser state and averaged weights stay fp32 (autocast computes in bf16, stores nothing)."""

    device_type: str
    dtype: torch.dtype | None  # None: full precision
    evaluation_dtype: torch.dtype | None = None
    note: str | None = None  # why the precision differs from what was asked

    @classmethod
    def of(cls, cfg: RuntimeConfig, device: torch.device, evaluation_amp: bool | str = False) -> Precision:
        dtype, note = amp_dtype(cfg.amp, device)
        evaluation, evaluation_note = amp_dtype(evaluation_amp, device)
        return cls(device.type, dtype, evaluation, note or evaluation_note)

    def training(self) -> contextlib.AbstractContextManager:
        """The training loss's forward."""
        return autocast(self.device_type, self.dtype)

    def crafting(self) -> contextlib.AbstractContextManager:
        """Attacks and weight-perturbation ascents: full precision under fp16, whose small input gradients
        would underflow to a zero sign."""
        return autocast(self.device_type, None if self.dtype == torch.float16 else self.dtype)

    def evaluation_crafting(self) -> contextlib.AbstractContextManager:
        """The per-epoch evaluation's attacks (``eval.amp``; fp32 by default)."""
        return autocast(self.device_type, self.evaluation_dtype)

    def describe(self) -> dict[str, str]:
        name = NAMES[self.dtype]
        return {"training_attack": "fp32" if name == "fp16" else name, "training_loss": name,
                "evaluation_attack": NAMES[self.evaluation_dtype], "judgement": "fp32", "attribution": "fp32"}


def grad_scaler(cfg: RuntimeConfig, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its gradients underflow without it); disabled, a pass-through, otherwise."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(cfg.amp, device)[0] == torch.float16)
