"""A criterion that keeps cross-class features from collapsing (docs/methods/cross_class_regularizer.md).

Wei et al. (2025) trace robust overfitting to the model discarding the features that classes share: the
cross-class attribution score falls as the robust test accuracy does, and label smoothing and knowledge
distillation help because their soft targets keep those features. This criterion guards them directly.
On each batch it forms the class attribution vectors of the inputs the objective trains on,

    A^c = mean over examples of class c of g(x) ⊙ W[c]          (g: features, W: the linear head)

and compares their cosine matrix C with that of a slowly moving reference R (an exponential moving
average of past batches' class vectors, momentum m, no gradient):

    loss = CE(f(x), y) + λ · mean over ordered pairs i ≠ j of classes in the batch of
                             [C_R[i, j] > 0] · relu(C_R[i, j] − C[i, j])²

Only a *loss* of positive cross-class similarity against the reference is penalised: classes may share
more features than before, never fewer than they recently did, and pairs the reference keeps apart are
left alone. λ = 0 is plain cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from atlens.errors import ConfigError, ModelContractError
from atlens.hooks import Callback
from atlens.models import check_contract
from atlens.training.criteria import CRITERIA, CrossEntropy


def class_sums(features: torch.Tensor, weight: torch.Tensor, y: torch.Tensor,
               num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the sum of the attribution vectors g(x) ⊙ W[y] of its examples, and their count."""
    attributions = features.float() * weight[y].float()
    sums = torch.zeros(num_classes, features.shape[1], device=features.device).index_add(0, y, attributions)
    # counted by index_add, not bincount, whose output size depends on the labels (a wait for the device)
    counts = torch.zeros(num_classes, device=features.device).index_add(0, y, torch.ones_like(y, dtype=torch.float))
    return sums, counts


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def collapse_penalty(current: torch.Tensor, reference: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Mean over ordered pairs of distinct ``classes`` (a boolean mask over the rows) of [cos_ref > 0] ·
    relu(cos_ref − cos_now)²; 0 for fewer than two. Fixed shapes throughout: no output sized by the data, so
    nothing waits for the device."""
    now = F.normalize(current, dim=1)
    ref = F.normalize(reference, dim=1)
    pairs = classes[:, None] & classes[None, :] & ~torch.eye(len(classes), dtype=torch.bool, device=classes.device)
    terms = (F.relu(ref @ ref.T - now @ now.T) * (ref @ ref.T > 0)).pow(2) * pairs
    return terms.sum() / pairs.sum().clamp_min(1)


@CRITERIA.register("cross_class")
class CrossClassPreserving(CrossEntropy, Callback):
    """CE + λ · the collapse penalty of the batch's class attribution matrix against its moving reference."""

    name = "cross_class"
    key = "cross_class_reference"
    phase = "state"

    def __init__(self, weight: float = 1.0, momentum: float = 0.99) -> None:
        if not weight >= 0:
            raise ConfigError(f"criterion.weight must be >= 0, got {weight}")
        if not 0 <= momentum < 1:
            raise ConfigError(f"criterion.momentum must be in [0, 1), got {momentum}")
        self.weight, self.momentum = weight, momentum
        self.reference: torch.Tensor | None = None  # [K, D] moving class vectors
        self.seen: torch.Tensor | None = None  # [K] classes the reference has met
        self._head: nn.Linear | None = None
        self._sum: Callable[[torch.Tensor], torch.Tensor] = _local

    def on_fit_start(self, loop: Any) -> None:
        self.attach(loop.model, loop.dist.differentiable_sum)

    def attach(self, model: nn.Module, all_sum: Callable[[torch.Tensor], torch.Tensor] = _local) -> None:
        """Read the head's weights from ``model``; ``all_sum`` sums a tensor over data-parallel ranks with its
        gradient, so the class vectors (and the moving reference) are those of the global batch."""
        self._head = check_contract(model)
        self._sum = all_sum

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, inputs: torch.Tensor,
                 features: torch.Tensor | None = None) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        if self.weight == 0:
            return loss
        if features is None or self._head is None:
            raise ModelContractError("criterion cross_class needs the model's features(x) and linear head "
                                     "(the atlens model contract); use criterion ce for this model")
        k = self._head.out_features
        sums, counts = class_sums(features, self._head.weight, y, k)
        sums, counts = self._sum(sums), self._sum(counts)  # the global batch's classes, on every rank
        present = counts > 0  # rows of absent classes are zeros and masked out: every shape is fixed
        current = sums / counts.clamp_min(1)[:, None]
        if self.reference is None:
            self.reference = torch.zeros(k, current.shape[1], device=current.device)
            self.seen = torch.zeros(k, dtype=torch.bool, device=current.device)
        self.reference, self.seen = self.reference.to(current.device), self.seen.to(current.device)
        # the pairs of classes in this batch that the reference has met
        penalty = collapse_penalty(current, self.reference, present & self.seen)
        with torch.no_grad():  # the reference moves after the comparison
            now = current.detach()
            moved = self.momentum * self.reference + (1 - self.momentum) * now
            self.reference = torch.where((present & self.seen)[:, None], moved,
                                         torch.where(present[:, None], now, self.reference))
            self.seen = self.seen | present
        return loss + self.weight * penalty

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "momentum": self.momentum}

    def state_dict(self) -> dict[str, Any]:
        return {} if self.reference is None else {"reference": self.reference.cpu(), "seen": self.seen.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.reference, self.seen = state["reference"], state["seen"]
