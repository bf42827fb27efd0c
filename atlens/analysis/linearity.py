"""Local linearity (Chen et al. 2021, A1.4): how well the loss gradient at x predicts it nearby."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atlens.attacks import ThreatModel
from atlens.attacks.pgd import mode
from atlens.data import BatchLoader, ImageTensors


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    # float64 softmax: in float32, p − onehot loses the tiny gradients of confident examples to rounding
    loss = F.cross_entropy(model(x).double(), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0].flatten(1)


def local_linearity(model: nn.Module, data: ImageTensors, threat: ThreatModel, samples: int = 1,
                    batch_size: int = 256, device: torch.device | str = "cpu", seed: int = 0) -> float:
    """E cos(∇x L(x, y), ∇x L(x + η, y)) with η ~ U([−ε, ε]^d), averaged over examples and ``samples``
    draws of η (examples whose gradient vanishes are skipped). 1 means the loss is linear along every
    direction within the ball."""
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    with mode(model, False):
        for x, y in BatchLoader(data, batch_size, device):
            g0 = _input_gradient(model, x, y)
            for _ in range(samples):
                eta = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x) * threat.epsilon
                g1 = _input_gradient(model, x + eta, y)
                # a saturated softmax gives an exactly zero gradient, whose direction is undefined: skip it
                defined = (g0.norm(dim=1) > 0) & (g1.norm(dim=1) > 0)
                total += F.cosine_similarity(g0[defined], g1[defined], dim=1).sum().item()
                count += int(defined.sum())
    return total / count if count else float("nan")
