"""Closed forms of Theorems 1-3 and Corollary 1 (3 classes, one copy of each feature).

Derivations, including the corrected label-smoothed objective, are in docs/theory.md.
"""

from __future__ import annotations

import math

SQRT_PI = math.sqrt(math.pi)


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def w1_at(mu: float, sigma: float, lam: float, eps: float) -> float:
    """Theorem 1: w1 = (μ − 2ε)/λ, positive on the whole range ε < μ/2."""
    return max(0.0, (mu - 2 * eps) / lam)


def w2_at(mu: float, sigma: float, lam: float, eps: float) -> float:
    """Theorem 1: w2* = max(0, (μ − 2ε − σ/√π)/λ)."""
    return max(0.0, (mu - 2 * eps - sigma / SQRT_PI) / lam)


def epsilon0(mu: float, sigma: float) -> float:
    """The ε beyond which adversarial training drops the cross-class feature: ½(μ − σ/√π)."""
    return 0.5 * (mu - sigma / SQRT_PI)


def w1_ls_at(mu: float, sigma: float, lam: float, eps: float, beta: float) -> float:
    """Label smoothing (corrected eq. 39): w1^LS = max(0, ((1−β)μ − (2−3β)ε)/λ)."""
    return max(0.0, ((1 - beta) * mu - (2 - 3 * beta) * eps) / lam)


def w2_ls_at(mu: float, sigma: float, lam: float, eps: float, beta: float) -> float:
    """Theorem 3 / eq. 41: w2^LS = max(0, (μ − (1−β)(2ε + σ/√π))/λ)."""
    return max(0.0, (mu - (1 - beta) * (2 * eps + sigma / SQRT_PI)) / lam)


def epsilon1(mu: float, sigma: float, beta: float) -> float:
    """Theorem 3: ε1 = ½(μ/(1−β) − σ/√π) > ε0."""
    return 0.5 * (mu / (1 - beta) - sigma / SQRT_PI)


def theorem2_probability(t: float, mu: float, sigma: float, eps: float, paper_variance: bool = False) -> float:
    """P(f_1 > f_2 for every δ in the ε-ball), x from class 1, t = w2/w1: Φ((1+t)/(√(1+t²)·σ1)).

    Under the pairwise worst case f_1 − f_2 = w1(x_E1 − 2ε) + w2(x_C2 − 2ε), both terms
    N(μ − 2ε, σ²), so σ1 = σ/(μ − 2ε). The paper's proof uses variance 2σ² (σ1 = √2·σ/(μ − 2ε));
    ``paper_variance=True`` gives that version."""
    sigma1 = sigma / (mu - 2 * eps) * (math.sqrt(2) if paper_variance else 1.0)
    return _phi((1 + t) / (math.sqrt(1 + t * t) * sigma1))
