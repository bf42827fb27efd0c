"""Loss Stationary Condition statistics (Yu et al. 2022): where the training adversarial losses sit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# six consecutive groups [0, 0.5), …, [2.5, 3.0], then everything above 3.0
EDGES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def lsc_groups(losses: torch.Tensor) -> torch.Tensor:
    """Group index of each per-example loss: 0…5 for the six groups, 6 above 3.0."""
    # 0.5, 1.0, ..., 2.5 made on the device (exact in binary), not copied from a host list at every step
    edges = torch.arange(1, len(EDGES) - 1, device=losses.device, dtype=losses.dtype) * (EDGES[1] - EDGES[0])
    groups = torch.bucketize(losses, edges, right=True)
    return torch.where(losses > EDGES[-1], torch.full_like(groups, len(EDGES) - 1), groups)


class LossHistogram:
    """Counts per LSC group (and below ``c_min``), kept on the losses' device: updating never waits for it."""

    def __init__(self, c_min: float | None = None) -> None:
        self.c_min = c_min
        self.counts = torch.zeros(len(EDGES) + 1, dtype=torch.long)  # the groups, then the count below c_min

    def update(self, losses: torch.Tensor) -> None:
        losses = losses.detach().float()
        if self.counts.device != losses.device:
            self.counts = self.counts.to(losses.device)
        groups = lsc_groups(losses)  # counted by index_add: bincount's output size would depend on the data
        self.counts[:-1] += torch.zeros_like(self.counts[:-1]).index_add_(0, groups, torch.ones_like(groups))
        if self.c_min is not None:
            self.counts[-1] += (losses <= self.c_min).sum()

    def reduce(self, total: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the counts over data-parallel ranks (``total`` all-reduces a tensor in place)."""
        self.counts = total(self.counts.clone())

    def epoch_row(self) -> dict[str, Any]:
        counts = self.counts.tolist()
        groups, below = counts[:-1], counts[-1]
        total = max(sum(groups), 1)
        row: dict[str, Any] = {"loss_hist": [round(c / total, 5) for c in groups]}
        if self.c_min is not None:
            row["loss_below_cmin"] = round(below / total, 5)
        self.counts = torch.zeros_like(self.counts)
        return row
