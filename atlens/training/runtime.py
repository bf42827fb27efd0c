"""Device, threads, precision and seeding: the parts of a run that depend on the machine."""

from __future__ import annotations

import contextlib
import os

import torch

from atlens.config import RuntimeConfig
from atlens.errors import ConfigError
from atlens.models import prefers_channels_last


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device={name} but CUDA is not available here; use runtime.device=cpu")
    return device


def configure_threads(threads: int | None) -> None:
    torch.set_num_threads(threads or os.cpu_count() or 1)


def use_channels_last(cfg: RuntimeConfig, model: torch.nn.Module) -> bool:
    return cfg.channels_last if cfg.channels_last is not None else prefers_channels_last(model)


def amp_dtype(cfg: RuntimeConfig, device: torch.device) -> torch.dtype | None:
    """bf16 (``amp: true`` or ``bf16``) or fp16 autocast on CUDA; None (full precision) elsewhere."""
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.float16 if cfg.amp == "fp16" else torch.bfloat16


def autocast(cfg: RuntimeConfig, device: torch.device, crafting: bool = False) -> contextlib.AbstractContextManager:
    """Autocast for the training forward; attacks are crafted in full precision under fp16, whose small
    input gradients would underflow to a zero sign."""
    dtype = amp_dtype(cfg, device)
    if crafting and dtype == torch.float16:
        dtype = None
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(cfg: RuntimeConfig, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its gradients underflow without it); disabled, a pass-through, otherwise."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(cfg, device) == torch.float16)


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
