"""Watching a run's metrics for failure modes that the numbers alone hide."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from atlens.errors import NonFiniteLossError


def catastrophic_overfitting(rows: list[dict[str, Any]], collapse: float = 0.5, floor: float = 0.05) -> int | None:
    """The first epoch at which test PGD accuracy collapses while FGSM accuracy rises (Wong et al. 2020):
    PGD accuracy falls below ``collapse`` × its best so far (which must exceed ``floor``) and below the
    previous evaluation, while FGSM accuracy is above its previous value. None if it never happens."""
    evaluated = [r for r in rows if r.get("test_robust_acc") is not None and r.get("test_fgsm_acc") is not None]
    best = 0.0
    for previous, current in zip(evaluated, evaluated[1:]):
        best = max(best, previous["test_robust_acc"])
        pgd_now, fgsm_now = current["test_robust_acc"], current["test_fgsm_acc"]
        if (best > floor and pgd_now < collapse * best and pgd_now < previous["test_robust_acc"]
                and fgsm_now > previous["test_fgsm_acc"]):
            return current["epoch"]
    return None


class NonFiniteSteps:
    """Which steps of an epoch had a non-finite loss, flagged on the device (no per-step wait for it) and read once."""

    def __init__(self) -> None:
        self.flags: torch.Tensor | None = None

    def note(self, loss: torch.Tensor, step: int, steps: int) -> None:
        flags = self.flags
        if flags is None or step >= len(flags):  # (a step outside fit may pass any index)
            self.flags = torch.zeros(max(steps, step + 1), dtype=torch.bool, device=loss.device)
            if flags is not None:
                self.flags[: len(flags)] = flags
        self.flags[step] |= ~torch.isfinite(loss.detach())

    def raise_if_any(self, epoch: int, lr: float, checkpoint: str | None,
                     total: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Name the first flagged step of epoch ``epoch + 1`` (over every rank with ``total``, a sum over ranks) in a
        ``NonFiniteLossError``, and forget the flags."""
        flags, self.flags = self.flags, None
        if flags is None:
            return
        if total is not None:
            flags = total(flags.int()) > 0
        if not bool(flags.any()):
            return
        step = int(flags.nonzero()[0])
        where = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint has been written yet"
        raise NonFiniteLossError(f"training loss became non-finite at epoch {epoch + 1}, batch {step + 1} "
                                 f"(lr {lr:g}); lower optim.lr or check the data; {where}")
