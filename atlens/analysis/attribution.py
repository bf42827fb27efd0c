"""Cross-class feature attribution (Wei et al. 2025, §3 and §5.3).

A_i(x) = g(x) ⊙ W[i] attributes logit i to the penultimate features g(x). The class vector A^y is
the mean over all examples of true class y of A_y(x'), x' adversarial; C[i, j] = cos(A^i, A^j) and
CAS = Σ_{i≠j} max(C[i, j], 0). Everything streams through running per-class sums, so memory does
not grow with the number of examples (unless instance vectors are asked for).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from atlens.models import check_contract


def cas_score(matrix: torch.Tensor) -> float:
    """Σ_{i≠j} max(C[i, j], 0) over both triangles: 0 … K(K−1)."""
    off_diagonal = matrix.clone().fill_diagonal_(0)
    return off_diagonal.clamp_min(0).sum().item()


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(vectors.double(), dim=1)
    return (unit @ unit.T).float()


class AttributionAccumulator:
    """Collects A_y(x) for batches of (features, labels); ``keep_instances`` also stores each vector
    (on the CPU) for the instance-wise matrix."""

    def __init__(self, model: nn.Module, num_classes: int, keep_instances: bool = False) -> None:
        self.weight = check_contract(model).weight.detach()
        self.sums = torch.zeros(num_classes, self.weight.shape[1], dtype=torch.float64, device=self.weight.device)
        self.counts = torch.zeros(num_classes, dtype=torch.long, device=self.weight.device)
        self.keep_instances = keep_instances
        self._instances: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Add A_y(x) = g(x) ⊙ W[y]; ``weight`` is the head's W when the features were computed, if the
        head has moved since (a training step), else the accumulator's model's current head."""
        weight = self.weight if weight is None else weight.detach()
        attributions = features.detach().float() * weight[labels].float()
        self.sums.index_add_(0, labels, attributions.double())
        self.counts.index_add_(0, labels, torch.ones_like(labels))  # bincount's output size would wait for the device
        if self.keep_instances:
            self._instances.append(attributions.cpu())
            self._labels.append(labels.cpu())

    def state(self) -> dict[str, torch.Tensor]:
        """The sums and counts so far (on the CPU), for ``load``."""
        return {"sums": self.sums.cpu(), "counts": self.counts.cpu()}

    def load(self, state: dict[str, torch.Tensor]) -> AttributionAccumulator:
        """Continue from what ``state`` returned."""
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])
        return self

    def reduce(self, total: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum over data-parallel ranks, each of which saw a shard (``total`` all-reduces in place)."""
        total(self.sums)
        total(self.counts)

    def class_vectors(self) -> torch.Tensor:
        if (self.counts == 0).any():
            missing = torch.nonzero(self.counts == 0).flatten().tolist()
            raise ValueError(f"no examples of class(es) {missing}: the attribution matrix needs every class")
        return (self.sums / self.counts[:, None]).float()

    def matrix(self) -> torch.Tensor:
        return cosine_matrix(self.class_vectors())

    def instances(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.keep_instances:
            raise ValueError("instance vectors were not kept; create the accumulator with keep_instances=True")
        return torch.cat(self._instances), torch.cat(self._labels)


def instance_matrix(attributions: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    chunk: int = 512) -> torch.Tensor:
    """I-C[i, j] = mean over x of class i of max over x' of class j of cos(A_i(x), A_j(x')).

    Rows are processed ``chunk`` at a time against all examples, with a per-class max by
    scatter-reduce, so memory is O(chunk · N) rather than O(N²). Self-pairs (x' = x) are excluded.
    """
    unit = F.normalize(attributions.float(), dim=1)
    n = len(labels)
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts = torch.bincount(labels, minlength=num_classes).double()
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        sims = unit[rows] @ unit.T  # [c, N]
        sims[torch.arange(sims.shape[0]), torch.arange(start, rows.stop)] = float("-inf")
        best = torch.full((sims.shape[0], num_classes), float("-inf"))
        best.scatter_reduce_(1, labels.expand(sims.shape[0], -1), sims, reduce="amax")
        best.clamp_min_(-1.0)  # a class with a single example has no other member to match
        sums.index_add_(0, labels[rows], best.double())
    return (sums / counts.clamp_min(1)[:, None]).float()
