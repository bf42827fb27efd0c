"""MART (Wang et al., ICLR 2020): misclassification-aware adversarial training.

loss = BCE(f(x'), y) + β·mean_i[ KL(p(x_i) ‖ p(x'_i)) · (1 − p_y(x_i)) ], where the boosted
cross-entropy BCE = CE(f(x'), y) − log(1 − max_{j≠y} p_j(x')) pushes down the strongest wrong class,
and the KL term weighs the clean/adversarial disagreement more on examples the model misclassifies.
x' comes from PGD on CE in eval mode from x + 0.001·N(0, I), as in the reference (docs/methods.md, objectives). The
constants 1.0001, 1.0000001 and 1e-12 are the reference's numerical guards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atlens.models import forward_with_features
from atlens.training.objectives import (
    CROSS_ENTROPY,
    OBJECTIVES,
    Criterion,
    StepOutput,
    TrainAttack,
    TrainingBatch,
    _CleanReferenceStart,
)


def mart_terms(clean_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per example: CE on x', the boost −log(1.0001 − p_{y'}(x')) and the weighted KL term (without β)."""
    adv_probs = F.softmax(adv_logits, 1)
    top2 = adv_probs.topk(2, dim=1).indices
    # y': the most probable wrong class of the adversarial prediction
    wrong = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
    boost = F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), wrong, reduction="none")
    clean_probs = F.softmax(clean_logits, 1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), clean_probs, reduction="none").sum(1)
    weighted_kl = kl * (1.0000001 - clean_probs.gather(1, y[:, None]).squeeze(1))
    return F.cross_entropy(adv_logits, y, reduction="none"), boost, weighted_kl


@OBJECTIVES.register("mart")
class MART(_CleanReferenceStart):
    name = "mart"

    def __init__(self, attack: TrainAttack, beta: float = 6.0) -> None:
        super().__init__(attack)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta

    def per_example_loss(self, model: nn.Module, batch: TrainingBatch) -> torch.Tensor:
        ce, boost, weighted_kl = mart_terms(model(batch.x), model(batch.x_adv), batch.y)
        return ce + boost + self.beta * weighted_kl

    def loss(self, model: nn.Module, batch: TrainingBatch, criterion: Criterion = CROSS_ENTROPY) -> StepOutput:
        clean_logits = model(batch.x)
        adv = forward_with_features(model, batch.x_adv)
        ce, boost, weighted_kl = mart_terms(clean_logits, adv.logits, batch.y)
        # the criterion (label smoothing, KD, ...) takes the place of the CE on x'
        loss = criterion(adv.logits, batch.y, batch.x_adv, adv.features) + boost.mean() + self.beta * weighted_kl.mean()
        per_example = (ce + boost + self.beta * weighted_kl).detach()
        return StepOutput.of(loss, adv, per_example, batch.y)

    def describe(self) -> dict:
        return {**super().describe(), "beta": self.beta}
