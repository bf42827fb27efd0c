"""Random directions in weight space and exact, temporary moves along them (loss landscapes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from atlens.models.weights import frozen_batchnorm_statistics, perturbable_weights

Direction = dict[str, torch.Tensor]


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> Direction:
    """A Gaussian direction with every filter rescaled to the norm of the same filter of the weights
    (Li et al. 2018); BatchNorm parameters and biases (one-dimensional) get a zero direction."""
    direction = {}
    for name, w in model.named_parameters():
        if w.dim() <= 1:
            direction[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        w_norm = w.detach().flatten(1).norm(dim=1)
        direction[name] = d * (w_norm / d_norm).view(-1, *[1] * (w.dim() - 1))
    return direction


def random_unit_direction(model: nn.Module, generator: torch.Generator) -> Direction:
    """A Gaussian direction over the conv/linear weights with unit norm over all of them together."""
    chosen = {id(w) for w in perturbable_weights(model)}
    direction = {name: (torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device) if id(w) in chosen
                        else torch.zeros_like(w)) for name, w in model.named_parameters()}
    norm = torch.sqrt(sum((d**2).sum() for d in direction.values()))
    return {name: d / norm for name, d in direction.items()}


def weight_norm(model: nn.Module) -> float:
    """‖w‖ over the conv/linear weights (the scale of ``random_unit_direction``'s radii)."""
    return float(torch.sqrt(sum((w.detach() ** 2).sum() for w in perturbable_weights(model))))


@contextmanager
def moved(model: nn.Module, direction: Direction, scale: float) -> Iterator[nn.Module]:
    """The model at w + scale·d; the original weights (and BatchNorm statistics) come back bit for bit."""
    params = dict(model.named_parameters())
    saved = {name: params[name].detach().clone() for name, d in direction.items() if scale and d.any()}
    try:
        with torch.no_grad():
            for name in saved:
                params[name].add_(direction[name], alpha=scale)
        with frozen_batchnorm_statistics(model):
            yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)
