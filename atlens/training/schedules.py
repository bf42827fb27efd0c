"""Learning-rate schedules by name (``optim.schedule``): pure functions of training progress.

A builder receives the run's ``lr``, ``epochs``, ``milestones`` and ``gamma`` (those its signature takes) and its
own options, and returns ``rate(epoch) -> float`` for a 0-based epoch, fractional within an epoch. Milestones are
fractions of the run, so a 200-epoch and a 20-epoch run decay at the same relative points; being stateless, a
resumed run needs nothing but the epoch to be on schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from atlens.registry import Registry

SCHEDULES: Registry = Registry("schedule", skip=("lr", "epochs", "milestones", "gamma"))

Rate = Callable[[float], float]


def warmed_up(rate: Rate, epochs: float) -> Rate:
    """``rate`` times a linear warm-up from 0 over the first ``epochs`` (none for 0)."""
    if epochs <= 0:
        return rate
    return lambda epoch: rate(epoch) * min(1.0, epoch / epochs)


@SCHEDULES.register("constant")
def constant(lr: float) -> Rate:
    return lambda epoch: lr


@SCHEDULES.register("piecewise")
def piecewise(lr: float, epochs: int, milestones: list[float], gamma: float) -> Rate:
    """Multiplied by ``gamma`` at each milestone; decays happen at epoch boundaries (epoch e uses the rate of its
    start)."""
    boundaries = [round(m * epochs) for m in milestones]
    return lambda epoch: lr * gamma ** sum(1 for b in boundaries if math.floor(epoch) >= b)


@SCHEDULES.register("cosine")
def cosine(lr: float, epochs: int, per_epoch: bool = False) -> Rate:
    """Half a cosine from ``lr`` to 0 over the run, updated every step; ``per_epoch``: each epoch keeps the rate of
    its start (Carmon et al.'s robust_self_training.py sets lr·½(1 + cos((e − 1)/E·π)) before 1-based epoch e)."""

    def rate(epoch: float) -> float:
        at = math.floor(epoch) if per_epoch else epoch
        return 0.5 * lr * (1 + math.cos(math.pi * min(at / epochs, 1.0)))

    return rate


@SCHEDULES.register("one_cycle")
def one_cycle(lr: float, epochs: int, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4) -> Rate:
    """PyTorch's ``OneCycleLR`` (cosine annealing, two phases) with one step per epoch, as Wang et al.'s ``cosinew``
    uses it (``total_steps=epochs``, ``pct_start`` 0.025): epoch e keeps the rate of step e, which rises from
    lr / ``div_factor`` to ``lr`` by step ``pct_start``·epochs − 1, then falls to lr / (``div_factor``·
    ``final_div_factor``) at the last epoch."""
    if not 0 < pct_start < 1:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
    initial, peak_step = lr / div_factor, pct_start * epochs - 1
    final = initial / final_div_factor

    def annealed(start: float, end: float, fraction: float) -> float:
        return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)

    def rate(epoch: float) -> float:
        step = min(math.floor(epoch), epochs - 1)
        if step <= peak_step:
            return annealed(initial, lr, step / peak_step if peak_step > 0 else 1.0)
        return annealed(lr, final, (step - peak_step) / (epochs - 1 - peak_step))

    return rate
