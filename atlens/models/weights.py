"""Which weights of a model weight-space methods and analyses act on, and how to leave BatchNorm's
running statistics untouched while they evaluate a model at moved weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


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
