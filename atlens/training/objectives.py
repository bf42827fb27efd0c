"""Training objectives: how to craft the training inputs and which loss to minimise on them.

Each objective is split into ``craft`` (at the current weights) and ``loss`` (possibly at perturbed
weights), so weight-space methods and logit-side criteria compose with every objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from atlens.attacks import ThreatModel, fgsm_rs, pgd
from atlens.registry import Registry
from atlens.training.criteria import CrossEntropy

# criterion(logits, y, inputs) -> mean loss; plain CE by default, label smoothing / KD replace it
Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
CROSS_ENTROPY = CrossEntropy()


@dataclass(frozen=True)
class TrainAttack:
    threat: ThreatModel
    steps: int
    step_size: float | None
    random_start: bool
    bn_mode: str


@dataclass
class TrainingBatch:
    x: torch.Tensor
    x_adv: torch.Tensor
    y: torch.Tensor


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar to minimise
    logits: torch.Tensor  # on the training (adversarial) inputs, for training robust accuracy
    per_example: torch.Tensor  # detached per-example CE on those inputs (LSC statistics, RWP)


class Objective:
    name = "objective"

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TrainingBatch:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: TrainingBatch, criterion: Criterion = CROSS_ENTROPY) -> StepOutput:
        logits = model(batch.x_adv)
        per_example = F.cross_entropy(logits.detach(), batch.y, reduction="none")
        return StepOutput(criterion(logits, batch.y, batch.x_adv), logits, per_example)


OBJECTIVES: Registry[Objective] = Registry("objective", skip=("attack",))


@OBJECTIVES.register("standard")
class Standard(Objective):
    """Cross-entropy on clean inputs."""

    name = "standard"

    def __init__(self, attack: TrainAttack) -> None:
        self.attack = attack

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TrainingBatch:
        return TrainingBatch(x, x, y)


@OBJECTIVES.register("pgd_at")
class PGDAT(Objective):
    """Madry et al.: cross-entropy on PGD-k adversarial examples."""

    name = "pgd_at"

    def __init__(self, attack: TrainAttack) -> None:
        self.attack = attack

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TrainingBatch:
        a = self.attack
        x_adv = pgd(model, x, y, a.threat, a.steps, a.step_size, "ce",
                    start="uniform" if a.random_start else "zero", bn_mode=a.bn_mode)
        return TrainingBatch(x, x_adv, y)


@OBJECTIVES.register("fast_at")
class FastAT(Objective):
    """Wong et al. 2020: FGSM from a uniform random start with step ``step_multiplier``·ε."""

    name = "fast_at"

    def __init__(self, attack: TrainAttack, step_multiplier: float = 1.25) -> None:
        self.attack = attack
        self.step_multiplier = step_multiplier

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TrainingBatch:
        a = self.attack
        x_adv = fgsm_rs(model, x, y, a.threat, self.step_multiplier * a.threat.epsilon, bn_mode=a.bn_mode)
        return TrainingBatch(x, x_adv, y)


@OBJECTIVES.register("trades")
class TRADES(Objective):
    """Zhang et al. 2019: CE(f(x), y) + β·KL(f(x) ‖ f(x')), x' maximising the KL (eval mode)."""

    name = "trades"

    def __init__(self, attack: TrainAttack, beta: float = 6.0) -> None:
        self.attack = attack
        self.beta = beta

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TrainingBatch:
        a = self.attack
        x_adv = pgd(model, x, y, a.threat, a.steps, a.step_size, "kl", start="normal", bn_mode="eval")
        return TrainingBatch(x, x_adv, y)

    def loss(self, model: nn.Module, batch: TrainingBatch, criterion: Criterion = CROSS_ENTROPY) -> StepOutput:
        clean_logits = model(batch.x)
        adv_logits = model(batch.x_adv)
        robust = F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(clean_logits, 1), reduction="batchmean")
        loss = criterion(clean_logits, batch.y, batch.x) + self.beta * robust
        per_example = F.cross_entropy(adv_logits.detach(), batch.y, reduction="none")
        return StepOutput(loss, adv_logits, per_example)
