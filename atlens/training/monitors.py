"""Watching a run's metrics for failure modes that the numbers alone hide."""

from __future__ import annotations

from typing import Any


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
