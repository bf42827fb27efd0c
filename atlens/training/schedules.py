"""Learning-rate schedules as pure functions of training progress.

Milestones are fractions of the run, so a 200-epoch and a 20-epoch run decay at the same relative
points; being stateless, a resumed run needs nothing but the epoch to be on schedule.
"""

from __future__ import annotations

import math


def learning_rate(schedule: str, base_lr: float, epochs: int, epoch: float, milestones: list[float] | None = None,
                  gamma: float = 0.1) -> float:
    """Learning rate at ``epoch`` (0-based, fractional within an epoch) of an ``epochs``-long run."""
    if schedule == "constant":
        return base_lr
    if schedule == "piecewise":
        # decays happen at epoch boundaries: epoch e uses the rate of its start
        boundaries = [round(m * epochs) for m in milestones or []]
        passed = sum(1 for b in boundaries if math.floor(epoch) >= b)
        return base_lr * gamma**passed
    if schedule == "cosine":
        return 0.5 * base_lr * (1 + math.cos(math.pi * min(epoch / epochs, 1.0)))
    raise ValueError(f"unknown schedule {schedule!r}; available: piecewise, cosine, constant")
