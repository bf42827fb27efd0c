"""Optimisers by name (``optim.name``), with parameter groups: weight decay on every parameter, or not on the
ones ``no_decay`` names — ``norm`` (the affine parameters of normalisation layers) and ``bias`` — as Wang et al.
(2023) and most ImageNet recipes exempt them.

A builder receives the model and the base learning rate (``optim.lr``) and declares its own options; the loop
sets every group's learning rate from the schedule at every step.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from atlens.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer", skip=("model", "lr"))

Exempt = Literal["norm", "bias"]
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def parameter_groups(model: nn.Module, weight_decay: float, no_decay: list[str]) -> list[dict[str, Any]]:
    """One group with ``weight_decay`` and, when ``no_decay`` names any kind, one without it."""
    exempt: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if ("norm" in no_decay and isinstance(module, _NORMS)) or ("bias" in no_decay and name == "bias"):
                exempt.add(id(param))
    params = [p for p in model.parameters() if p.requires_grad]
    decayed = [p for p in params if id(p) not in exempt]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if exempt:
        groups.append({"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0})
    return groups


def _check(weight_decay: float, no_decay: list[str]) -> None:
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    unknown = sorted(set(no_decay) - {"norm", "bias"})
    if unknown:
        raise ValueError(f"no_decay: expected norm and/or bias, got {', '.join(unknown)}")


@OPTIMIZERS.register("sgd")
def sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = False,
        no_decay: list[str] | None = None) -> torch.optim.Optimizer:
    """SGD with momentum (the adversarial-training papers' optimiser)."""
    no_decay = list(no_decay or [])
    _check(weight_decay, no_decay)
    if momentum < 0:
        raise ValueError(f"momentum must be >= 0, got {momentum}")
    if nesterov and momentum == 0:
        raise ValueError("nesterov needs momentum > 0")
    return torch.optim.SGD(parameter_groups(model, weight_decay, no_decay), lr=lr, momentum=momentum,
                           nesterov=nesterov)


@OPTIMIZERS.register("adamw")
def adamw(model: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.05, no_decay: list[str] | None = None) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay; the usual optimiser of vision transformers)."""
    no_decay = list(no_decay or [])
    _check(weight_decay, no_decay)
    if not all(0 <= b < 1 for b in betas) or eps <= 0:
        raise ValueError(f"betas must be in [0, 1) and eps > 0, got {betas} and {eps}")
    return torch.optim.AdamW(parameter_groups(model, weight_decay, no_decay), lr=lr, betas=tuple(betas), eps=eps)
