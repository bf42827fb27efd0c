"""Threat models: the ε-ball around an input in [0,1], its projection, random start and ascent step."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch

from atlens.config import AttackConfig, Norm
from atlens.errors import ConfigError
from atlens.seeding import GLOBAL_NOISE, Noise

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
        """ε/4 for L∞ (2/255 at 8/255) and ε/8 for L2, the papers' training defaults."""
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

    def random_start(self, x: torch.Tensor, noise: Noise = GLOBAL_NOISE) -> torch.Tensor:
        """A uniform draw from the ball (L∞) or a uniform direction at a uniform radius (L2), projected."""
        if self.norm == "linf":
            delta = noise.uniform(x, -self.epsilon, self.epsilon)
        else:
            direction = noise.normal(x)
            direction = direction / _per_example_norm(direction).clamp_min(1e-12)
            delta = direction * noise.per_example(x) * self.epsilon
        return self.project(delta, x)

    def ascent_step(self, delta: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        """Steepest ascent for the norm: sign of the gradient (L∞) or its unit direction (L2)."""
        if self.norm == "linf":
            return delta + step_size * grad.sign()
        return delta + step_size * grad / _per_example_norm(grad).clamp_min(1e-12)


DEFAULT_EPSILON = {"linf": 8 / 255, "l2": 0.5}  # the field's CIFAR-10 budgets


def threat_model(norm: str | None = None, epsilon: float | None = None,
                 bounds: tuple[float, float] | None = (0.0, 1.0), base: AttackConfig | None = None) -> ThreatModel:
    """The one way atlens makes a threat model (training, evaluation, CAS, the API and the CLI).

    ``norm`` defaults to ``base.norm`` (a run's ``cfg.attack``), else linf; ``epsilon`` to ``base.epsilon`` when
    the norm is the run's, else the norm's usual budget (8/255 for linf, 0.5 for l2). An ε that is not positive,
    or above 1 for linf (8 where 8/255 was meant), is refused with a message."""
    norm = norm or (base.norm if base is not None else "linf")
    if norm not in NORMS:
        raise ConfigError(f"norm: expected {' or '.join(NORMS)}, got {norm!r}")
    if epsilon is None:
        epsilon = base.epsilon if base is not None and base.norm == norm else DEFAULT_EPSILON[norm]
    if not epsilon > 0 or (norm == "linf" and epsilon > 1):
        limit = " and at most 1 for linf on inputs in [0, 1] (write 8/255 or 0.0314)" if norm == "linf" else ""
        raise ConfigError(f"epsilon {epsilon:g}: expected > 0{limit}")
    return ThreatModel(norm, float(epsilon), bounds)
