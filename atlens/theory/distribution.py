"""The synthetic cross-class data model of Wei et al. (2025, §4.1), generalised.

K classes; every class i has an exclusive feature x_E,i and every pair of classes {a, b} shares a
cross-class feature x_C,{a,b}. A sample of class i has x_E,i ~ N(μ, σ²), x_C,p ~ N(μ, σ²) for each
pair p containing i, and zeros elsewhere. With K = 3 the pair {a, b} is the paper's x_C,j with
j ∉ {a, b}, so the layout is exactly the paper's (x_E1, x_E2, x_E3, x_C1, x_C2, x_C3). Each feature
may be repeated m times (the 6m-dimensional extension of Appendix E.5).

The restricted hypothesis of the paper, f_w(x)_i = w1·x_E,i + w2·Σ_{p ∋ i} x_C,p (w1, w2 ≥ 0),
is ``symmetric_weight_matrix(w1, w2)`` as a K × d matrix.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CrossClassModel:
    classes: int = 3
    copies: int = 1
    mu: float = 1.0
    sigma: float = 0.5

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Cross-class features; for K = 3 ordered as the paper's C1 = {2,3}, C2 = {1,3}, C3 = {1,2}."""
        if self.classes == 3:
            return [(1, 2), (0, 2), (0, 1)]
        return list(itertools.combinations(range(self.classes), 2))

    @property
    def dim(self) -> int:
        return (self.classes + len(self.pairs)) * self.copies

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(exclusive, cross) indicator matrices, K × d: which features are active for each class."""
        k, m = self.classes, self.copies
        exclusive = torch.zeros(k, k + len(self.pairs))
        cross = torch.zeros_like(exclusive)
        exclusive[:, :k] = torch.eye(k)
        for index, (a, b) in enumerate(self.pairs):
            cross[a, k + index] = cross[b, k + index] = 1
        return exclusive.repeat_interleave(m, dim=1), cross.repeat_interleave(m, dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None,
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if labels is None:
            labels = torch.arange(n) % self.classes
        exclusive, cross = self.masks()
        active = (exclusive + cross)[labels]
        values = self.mu + self.sigma * torch.randn(len(labels), self.dim, generator=generator)
        return values * active, labels

    def symmetric_weight_matrix(self, w1: torch.Tensor | float, w2: torch.Tensor | float) -> torch.Tensor:
        exclusive, cross = self.masks()
        return w1 * exclusive + w2 * cross


def lemma2_delta(model: CrossClassModel, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Lemma 2's worst-case perturbation for each example's class: −ε on its own features, +ε on the
    features it lacks. For K = 3, class 1: (−ε, ε, ε, ε, −ε, −ε)."""
    exclusive, cross = model.masks()
    own = (exclusive + cross)[labels]
    return epsilon * (1 - 2 * own)
