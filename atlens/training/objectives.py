"""Training objectives: how to craft the training inputs and which loss to minimise on them.

Each objective is split into ``craft`` (at the current weights) and ``loss`` (possibly at perturbed
weights), so weight-space methods and logit-side criteria compose with every objective. An
objective also states what the loop needs to know about it (class attributes), so the loop never
asks for a method by name, and ``per_example_loss``: the loss that weight perturbations ascend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from atlens.attacks import ThreatModel, fgsm_rs, pgd, threat_model
from atlens.config import AttackConfig
from atlens.models import Forward, forward_with_features
from atlens.registry import Registry
from atlens.seeding import GLOBAL_NOISE, Noise
from atlens.training.criteria import CrossEntropy

# criterion(logits, y, inputs, features) -> mean loss; plain CE by default, label smoothing / KD replace it
Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
CROSS_ENTROPY = CrossEntropy()


@dataclass(frozen=True)
class TrainAttack:
    threat: ThreatModel
    steps: int
    step_size: float | None
    random_start: bool
    bn_mode: str | None  # None: the objective's reference setting

    @classmethod
    def of(cls, attack: AttackConfig, bounds: tuple[float, float] | None) -> TrainAttack:
        return cls(threat_model(bounds=bounds, base=attack), attack.steps, attack.step_size, attack.random_start,
                   attack.bn_mode)


@dataclass
class TrainingBatch:
    x: torch.Tensor
    x_adv: torch.Tensor
    y: torch.Tensor


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar to minimise
    logits: torch.Tensor  # on the training (adversarial) inputs, for training robust accuracy
    per_example: torch.Tensor  # detached per-example objective loss (LSC statistics)
    target: torch.Tensor  # the labels, for training accuracy
    features: torch.Tensor | None = None  # the head's input for ``logits`` (None without the model contract)
    head_weight: torch.Tensor | None = None  # the head's weights those logits were computed with

    @classmethod
    def of(cls, loss: torch.Tensor, forward: Forward, per_example: torch.Tensor, target: torch.Tensor) -> StepOutput:
        return cls(loss, forward.logits, per_example, target, forward.features, forward.head_weight)


class Objective:
    name = "objective"
    selects_by = "robust"  # which test/validation accuracy selects the best checkpoint
    watches_catastrophic_overfitting = False  # track FGSM accuracy and flag a collapse of PGD accuracy
    crafting_bn_mode = "train"  # the reference's BatchNorm mode while crafting, unless attack.bn_mode says

    def __init__(self, attack: TrainAttack) -> None:
        self.attack = attack
        self.bn_mode = attack.bn_mode or self.crafting_bn_mode

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: Noise = GLOBAL_NOISE) -> TrainingBatch:
        """The training inputs at the current weights; random starts are drawn from ``noise``."""
        raise NotImplementedError

    def per_example_loss(self, model: nn.Module, batch: TrainingBatch) -> torch.Tensor:
        """The objective's loss per example with plain cross-entropy: what AWP/RWP ascend (its mean is
        the objective's loss)."""
        return F.cross_entropy(model(batch.x_adv), batch.y, reduction="none")

    def loss(self, model: nn.Module, batch: TrainingBatch, criterion: Criterion = CROSS_ENTROPY) -> StepOutput:
        adv = forward_with_features(model, batch.x_adv)
        per_example = F.cross_entropy(adv.logits.detach(), batch.y, reduction="none")
        return StepOutput.of(criterion(adv.logits, batch.y, batch.x_adv, adv.features), adv, per_example, batch.y)

    def describe(self) -> dict:
        return {"name": self.name, "crafting_bn_mode": self.bn_mode}


OBJECTIVES: Registry[Objective] = Registry("objective", skip=("attack",))


@OBJECTIVES.register("standard")
class Standard(Objective):
    """Cross-entropy on clean inputs."""

    name = "standard"
    selects_by = "clean"  # e.g. a KD standard teacher: the best clean accuracy

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: Noise = GLOBAL_NOISE) -> TrainingBatch:
        return TrainingBatch(x, x, y)


@OBJECTIVES.register("pgd_at")
class PGDAT(Objective):
    """Madry et al.: cross-entropy on PGD-k adversarial examples."""

    name = "pgd_at"

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: Noise = GLOBAL_NOISE) -> TrainingBatch:
        a = self.attack
        x_adv = pgd(model, x, y, a.threat, a.steps, a.step_size, "ce",
                    start="uniform" if a.random_start else "zero", bn_mode=self.bn_mode, noise=noise)
        return TrainingBatch(x, x_adv, y)


@OBJECTIVES.register("fast_at")
class FastAT(Objective):
    """Wong et al. 2020: FGSM from a uniform random start with step ``step_multiplier``·ε."""

    name = "fast_at"
    watches_catastrophic_overfitting = True

    def __init__(self, attack: TrainAttack, step_multiplier: float = 1.25) -> None:
        super().__init__(attack)
        if step_multiplier <= 0:
            raise ValueError(f"step_multiplier must be > 0, got {step_multiplier}")
        self.step_multiplier = step_multiplier

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: Noise = GLOBAL_NOISE) -> TrainingBatch:
        a = self.attack
        x_adv = fgsm_rs(model, x, y, a.threat, self.step_multiplier * a.threat.epsilon, bn_mode=self.bn_mode,
                        noise=noise)
        return TrainingBatch(x, x_adv, y)


def kl_per_example(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) ‖ softmax(adv)) per example."""
    return F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(clean_logits, 1), reduction="none").sum(1)


class _CleanReferenceStart(Objective):
    """Objectives whose reference crafts from x + 0.001·N(0, I) in eval mode (TRADES, MART); ``start: uniform``
    starts from a uniform point of the ε-ball instead (Gowal et al.'s and Wang et al.'s TRADES)."""

    crafting_bn_mode = "eval"
    inner_loss = "ce"

    def __init__(self, attack: TrainAttack, start: str = "normal") -> None:
        super().__init__(attack)
        if start not in ("normal", "uniform"):
            raise ValueError(f"start: expected normal (x + 0.001·N(0, I)) or uniform (in the ε-ball), got {start!r}")
        self.start = start

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: Noise = GLOBAL_NOISE) -> TrainingBatch:
        a = self.attack
        x_adv = pgd(model, x, y, a.threat, a.steps, a.step_size, self.inner_loss,
                    start=self.start if a.random_start else "zero", bn_mode=self.bn_mode, noise=noise)
        return TrainingBatch(x, x_adv, y)

    def describe(self) -> dict:
        return {**super().describe(), "start": self.start}


@OBJECTIVES.register("trades")
class TRADES(_CleanReferenceStart):
    """Zhang et al. 2019: CE(f(x), y) + β·KL(f(x) ‖ f(x')), x' maximising the KL (eval mode by default)."""

    name = "trades"
    inner_loss = "kl"

    def __init__(self, attack: TrainAttack, beta: float = 6.0, start: str = "normal") -> None:
        super().__init__(attack, start)
        if not attack.random_start:
            raise ValueError("TRADES needs attack.random_start: true (at δ = 0 the KL and its gradient are "
                             "zero, so PGD would never move; the reference starts from x + 0.001·N(0, I))")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta

    def per_example_loss(self, model: nn.Module, batch: TrainingBatch) -> torch.Tensor:
        clean_logits = model(batch.x)
        adv_logits = model(batch.x_adv)
        return F.cross_entropy(clean_logits, batch.y, reduction="none") + self.beta * kl_per_example(
            clean_logits, adv_logits)

    def loss(self, model: nn.Module, batch: TrainingBatch, criterion: Criterion = CROSS_ENTROPY) -> StepOutput:
        clean = forward_with_features(model, batch.x)
        adv = forward_with_features(model, batch.x_adv)
        robust = kl_per_example(clean.logits, adv.logits)
        loss = criterion(clean.logits, batch.y, batch.x, clean.features) + self.beta * robust.mean()
        with torch.no_grad():
            per_example = F.cross_entropy(clean.logits, batch.y, reduction="none") + self.beta * robust
        return StepOutput.of(loss, adv, per_example.detach(), batch.y)

    def describe(self) -> dict:
        return {**super().describe(), "beta": self.beta}


# MART (Wang et al., ICLR 2020): misclassification-aware adversarial training.
#
# loss = BCE(f(x'), y) + β·mean_i[ KL(p(x_i) ‖ p(x'_i)) · (1 − p_y(x_i)) ], where the boosted
# cross-entropy BCE = CE(f(x'), y) − log(1 − max_{j≠y} p_j(x')) pushes down the strongest wrong class,
# and the KL term weighs the clean/adversarial disagreement more on examples the model misclassifies.
# x' comes from PGD on CE in eval mode from x + 0.001·N(0, I), as in the reference (docs/methods.md, objectives). The
# constants 1.0001, 1.0000001 and 1e-12 are the reference's numerical guards.


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

    def __init__(self, attack: TrainAttack, beta: float = 6.0, start: str = "normal") -> None:
        super().__init__(attack, start)
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
