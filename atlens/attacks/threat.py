"""Threat models: the ε-ball around an input in [0,1], its projection, random start and ascent step."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch

from atlens.config import AttackConfig, Norm

NORMS = typing.get_args(Norm)


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


@dataclass(frozen=True)
class ThreatModel:
    norm: str  # "linf" or "l2"
    epsilon: float
    box: tuple[float, float] | None = (0.0, 1.0)  # valid input range; None for feature-space data

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be {' or '.join(NORMS)}, got {self.norm!r}")
        if self.epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon}")

    def default_step_size(self) -> float:
        """ε/4 for L∞ (2/255 at 8/255) and ε/8 for L2, the SPEC's training defaults."""
        return self.epsilon / 4 if self.norm == "linf" else self.epsilon / 8

    def project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Nearest perturbation in the ball that also keeps x + δ in the box (default [0, 1])."""
        if self.norm == "linf":
            delta = delta.clamp(-self.epsilon, self.epsilon)
        else:
            scale = (self.epsilon / _per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
            delta = delta * scale
        if self.box is None:
            return delta
        # clamping into the box can only shrink |δ| coordinate-wise, so the ball constraint still holds
        return (x + delta).clamp(*self.box) - x

    def random_start(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            delta = torch.empty_like(x).uniform_(-self.epsilon, self.epsilon)
        else:
            direction = torch.randn_like(x)
            direction = direction / _per_example_norm(direction).clamp_min(1e-12)
            radius = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)
            delta = direction * radius * self.epsilon
        return self.project(delta, x)

    def ascent_step(self, delta: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        """Steepest ascent for the norm: sign of the gradient (L∞) or its unit direction (L2)."""
        if self.norm == "linf":
            return delta + step_size * grad.sign()
        return delta + step_size * grad / _per_example_norm(grad).clamp_min(1e-12)


def threat_model(attack: AttackConfig, bounds: tuple[float, float] | None, norm: str | None = None,
                 epsilon: float | None = None) -> ThreatModel:
    """A run's threat model (``cfg.attack`` on its dataset's input range), optionally at another norm or ε."""
    return ThreatModel(norm or attack.norm, attack.epsilon if epsilon is None else epsilon, bounds)
