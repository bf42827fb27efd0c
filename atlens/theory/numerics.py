"""Numerical checks of the theory that never use the closed forms.

The regularised adversarial objective (eq. 9/10, and 12/13 with label smoothing) is minimised over
(w1, w2) ≥ 0 on samples, by projected gradient descent; the inner maximisation over δ is done either
by atlens's PGD or by Lemma 2's δ, so the two can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atlens.attacks import ThreatModel, pgd
from atlens.seeding import seeded
from atlens.theory.distribution import CrossClassModel, lemma2_delta


class SymmetricLinear(nn.Module):
    """f_w(x) = W(w1, w2) x, the restricted linear hypothesis of the paper."""

    def __init__(self, model: CrossClassModel, w1: float = 0.0, w2: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.w = nn.Parameter(torch.tensor([w1, w2]))

    def weight(self) -> torch.Tensor:
        return self.model.symmetric_weight_matrix(self.w[0], self.w[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight().T


def margin_and_others(logits: torch.Tensor, y: torch.Tensor,
                      chooser: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_j* − f_y, mean_{j≠y} f_j) per example, j* = argmax_{j≠y} of ``chooser`` (default: logits).

    Choosing j* from logits at w2 + η makes the gradient at w2 = 0 the right derivative of the max,
    which is what projected descent on w2 ≥ 0 needs (autograd's max splits ties evenly instead).
    """
    own = logits.gather(1, y[:, None]).squeeze(1)
    mask = torch.nn.functional.one_hot(y, logits.shape[1]).bool()
    choice = (chooser if chooser is not None else logits).detach().masked_fill(mask, float("-inf")).argmax(1)
    others_mean = (logits.sum(1) - own) / (logits.shape[1] - 1)
    return logits.gather(1, choice[:, None]).squeeze(1) - own, others_mean


@dataclass
class Solution:
    w1: float
    w2: float


def _worst_inputs(probe: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, inner: str,
                  model: CrossClassModel, steps: int, seed: int) -> torch.Tensor:
    if inner == "lemma2":
        return x + lemma2_delta(model, y, eps)
    if inner != "pgd":
        raise ValueError(f"inner must be 'pgd' or 'lemma2', got {inner!r}")
    threat = ThreatModel("linf", eps, box=None)
    with seeded(seed):
        # PGD on cross-entropy, the attack AT uses: every coordinate has a signed gradient, so it
        # lands on a maximiser of the margin without the margin's flat directions (which would leave
        # the label-smoothing term evaluated at an arbitrary δ)
        return pgd(probe, x, y, threat, steps, eps / 4, "ce")


def solve(model: CrossClassModel, eps: float, lam: float, beta: float = 0.0, inner: str = "pgd",
          samples: int = 12_000, iterations: int = 15, seed: int = 0, pgd_steps: int = 10) -> Solution:
    """argmin over (w1, w2) ≥ 0 of mean[(1−β)·margin(x+δ) − β·mean_{j≠y} f_j(x+δ)] + λ/2·‖w‖², δ
    from the hard-label attack (as in AT, also with label smoothing)."""
    gen = torch.Generator().manual_seed(seed)
    x, y = model.sample(samples, gen)
    f = SymmetricLinear(model, model.mu / lam, model.mu / lam)
    eta = 1e-3 * model.mu / lam
    step = 0.8 / lam  # the objective is λ-strongly convex: this step contracts by 0.2 per iteration
    for _ in range(iterations):
        w1, w2 = f.w.detach().tolist()
        probe = SymmetricLinear(model, w1, max(w2, eta))
        x_adv = _worst_inputs(probe, x, y, eps, inner, model, pgd_steps, seed)
        with torch.no_grad():
            chooser = probe(x_adv)
        margin, others = margin_and_others(f(x_adv), y, chooser)
        objective = ((1 - beta) * margin - beta * others).mean() + lam / 2 * (f.w**2).sum()
        (grad,) = torch.autograd.grad(objective, f.w)
        with torch.no_grad():
            f.w.copy_((f.w - step * grad).clamp_min(0))
    w1, w2 = f.w.detach().tolist()
    return Solution(w1, w2)


def threshold(model: CrossClassModel, lam: float, beta: float = 0.0, inner: str = "lemma2",
              tolerance: float = 1e-3, **kwargs) -> float:
    """The ε at which the numerical w2 reaches 0 (bisection on (0, μ/2))."""
    low, high = 0.0, model.mu / 2
    floor = 1e-4 * model.mu / lam
    while high - low > tolerance * model.mu:
        mid = (low + high) / 2
        if solve(model, mid, lam, beta, inner, **kwargs).w2 > floor:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def theorem2_monte_carlo(model: CrossClassModel, t: float, eps: float, samples: int = 200_000,
                         seed: int = 0) -> tuple[float, float]:
    """Estimate P(f_1 > f_2 for every δ in the ε-ball) for class-1 samples with w = (1, t), and its
    standard error. For a linear f the worst δ is exact: min_δ c·(x+δ) = c·x − ε‖c‖₁, c = W_1 − W_2."""
    gen = torch.Generator().manual_seed(seed)
    x, _ = model.sample(samples, gen, labels=torch.zeros(samples, dtype=torch.long))
    weight = model.symmetric_weight_matrix(1.0, t)
    c = weight[0] - weight[1]
    worst = x @ c - eps * c.abs().sum()
    p = (worst > 0).double().mean().item()
    return p, (p * (1 - p) / samples) ** 0.5
