"""Weights: which ones weight-space methods and analyses act on, how to leave BatchNorm's running statistics
untouched while they evaluate a model at moved weights, and reading weight files without running code."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlens.errors import CheckpointError


def perturbable_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights AWP/RWP perturb: those of convolutions and linear layers."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


@contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    buffers = [(b, b.clone()) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in m.buffers()]
    try:
        yield
    finally:
        for buffer, saved in buffers:
            buffer.copy_(saved)


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str, hint: str = "") -> None:
    """Strict load that names what does not match instead of PyTorch's long traceback: whether the architecture
    differs (tensors on one side only), the shapes on both sides of a mismatch, and ``hint`` (the option that
    chooses the model, e.g. "choose the --model the weights were saved from")."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        def few(items: list[str]) -> str:
            return ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")

        parts = []
        if missing or unexpected:
            parts.append(f"the architecture differs: the model has {len(own)} tensors, the weights {len(weights)}, "
                         f"{len(set(own) & set(weights))} in common")
            parts += [f"only in the model: {few(missing)}" if missing else "",
                      f"only in the weights: {few(unexpected)}" if unexpected else ""]
        if wrong:
            parts.append("shapes differ (weights vs model): " + few(
                [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]))
        message = f"{source} does not match the model: " + "; ".join(p for p in parts if p)
        raise CheckpointError(message + (f"; {hint}" if hint else ""))
    model.load_state_dict(weights)


def load_torch_file(path: Path, map_location: str | torch.device = "cpu", refusal: str = "", damaged: str = "damaged",
                    after: str = "") -> Any:
    """``torch.load(weights_only=True)``: never unpickles code. A file that would need code, or that cannot be
    read, raises one CheckpointError naming it (``refusal`` says what to do instead, ``after`` is appended)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds objects that only running code could rebuild; {refusal}{after}") from None
    # a torn file can also stop torch's restricted unpickler on a malformed stack (IndexError, KeyError)
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is {damaged} ({first}){after}") from None
