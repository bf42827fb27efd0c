"""Which weights of a model weight-space methods and analyses act on, and how to leave BatchNorm's
running statistics untouched while they evaluate a model at moved weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that names what does not match instead of PyTorch's long traceback."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"missing {few(missing)}" if missing else "", f"unexpected {few(unexpected)}" if unexpected else "",
                 f"shape mismatch {few(wrong)}" if wrong else ""]
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(p for p in parts if p))
    model.load_state_dict(weights)
