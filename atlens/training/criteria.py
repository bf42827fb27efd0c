"""Logit-side criteria: what the objective minimises on the training inputs' logits.

Each combines with every objective (PGD-AT, TRADES, fast AT): the objective decides the inputs, the
criterion turns logits into a loss. ``criterion(logits, y, inputs, features)`` returns the batch mean;
``features`` is the head's input for those logits (None for a model without the ``features``/``head``
contract). A builder that takes ``teachers`` receives the trained teacher models; others are not given them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from atlens.errors import ConfigError
from atlens.registry import Registry


class CrossEntropy:
    """The plain criterion and the base of every other: ``teacher_specs`` says which teacher models a
    criterion needs (none here); the run trains or loads them and passes them in as ``teachers``."""

    name = "ce"
    teacher_checkpoint = "best"

    def teacher_specs(self) -> dict[str, Any]:
        """Role -> teacher as configured (a run directory, a checkpoint, or {config: FILE, set: [...]})."""
        return {}

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, inputs: torch.Tensor,
                 features: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


CRITERIA: Registry = Registry("criterion", skip=("teachers",))


CRITERIA.register("ce")(CrossEntropy)


@CRITERIA.register("label_smoothing")
class LabelSmoothing(CrossEntropy):
    """CE against (1 − β)·onehot + β/K."""

    name = "label_smoothing"

    def __init__(self, beta: float = 0.1) -> None:
        if not 0 <= beta < 1:
            raise ConfigError(f"criterion.beta must be in [0, 1), got {beta}")
        self.beta = beta

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, inputs: torch.Tensor,
                 features: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.beta)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "beta": self.beta}


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch."""
    return temperature**2 * F.kl_div(F.log_softmax(student / temperature, 1), F.softmax(teacher / temperature, 1),
                                     reduction="batchmean")


TFKD_FORMS = {"paper": 0.9, "code": 0.99}  # form -> the probability a on the true class it uses by default


@CRITERIA.register("tfkd")
class TeacherFreeKD(CrossEntropy):
    """Tf-KD regulariser (Yuan et al. 2020): (1 − weight)·CE + weight·(a KD term towards a hand-made teacher with
    probability ``a`` on the true class and the rest uniform). Two forms:

    - ``paper`` (default; the KD of the paper's framework, the baseline Chen et al. cite): log p taken as the
      teacher's logits and distilled as Hinton et al. do, T²·KL(softmax(log p / T) ‖ softmax(s / T)) averaged over
      the batch; a = 0.9. Softening flattens the teacher: softmax(log p / T) ∝ p^(1/T), so at T = 20 with ten
      classes the true class keeps 0.12 of the mass, not 0.9.
    - ``code`` (Yuan et al.'s public code): the teacher softmax(p / T) of the *probabilities*, the student not
      softened, ``KLDivLoss`` with its default 'mean' over batch × classes, times ``multiplier`` = 100; a = 0.99.

    T = 20 and weight = 0.1 are Yuan et al.'s CIFAR settings; Chen et al. do not state theirs."""

    name = "tfkd"

    def __init__(self, a: float | None = None, temperature: float = 20.0, weight: float = 0.1, form: str = "paper",
                 multiplier: float = 100.0) -> None:
        if form not in TFKD_FORMS:
            raise ConfigError(f"criterion.form: expected {' or '.join(TFKD_FORMS)}, got {form!r}")
        a = TFKD_FORMS[form] if a is None else a
        if not 0 < a < 1 or not 0 <= weight <= 1 or temperature <= 0 or multiplier <= 0:
            raise ConfigError("criterion tfkd needs 0 < a < 1, 0 <= weight <= 1, temperature > 0 and multiplier > 0")
        self.a, self.temperature, self.weight, self.form, self.multiplier = a, temperature, weight, form, multiplier

    def teacher(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The hand-made teacher's probabilities: a on the true class, (1 − a)/(K − 1) elsewhere."""
        k = logits.shape[1]
        return torch.full_like(logits, (1 - self.a) / (k - 1)).scatter_(1, y[:, None], self.a)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, inputs: torch.Tensor,
                 features: torch.Tensor | None = None) -> torch.Tensor:
        probs = self.teacher(logits, y)
        if self.form == "paper":  # softmax(log p / T) ∝ p^(1/T): the teacher flattened towards uniform
            regulariser = distillation(logits, probs.log(), self.temperature)
        else:
            regulariser = self.multiplier * F.kl_div(F.log_softmax(logits, 1), F.softmax(probs / self.temperature, 1),
                                                     reduction="mean")
        return (1 - self.weight) * F.cross_entropy(logits, y) + self.weight * regulariser

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "form": self.form, "a": self.a, "temperature": self.temperature,
                "weight": self.weight, **({"multiplier": self.multiplier} if self.form == "code" else {})}


TEACHER_PRESETS = {"paper": (0.5, 0.25), "reference": (0.6, 0.1)}  # (λ_adv, λ_std)


@CRITERIA.register("kd")
class SelfTeacherKD(CrossEntropy):
    """Chen et al. 2021 eq. 1: (1 − λ1 − λ2)·CE + λ1·KD(adv teacher) + λ2·KD(std teacher), with the
    teachers (eval mode, no gradients) scoring the same inputs the student is trained on.

    ``weights: paper`` is λ1 = 0.5, λ2 = 0.25; ``weights: reference`` is the public code's 0.6 / 0.1
    (CE 0.3); explicit ``lambda_adv`` / ``lambda_std`` override both. A teacher is a run directory, a
    checkpoint file, or ``{config: FILE, set: [...]}`` for a run that atlens trains first.
    """

    name = "kd"

    def __init__(self, teachers: dict[str, nn.Module] | None = None, adv_teacher: Any = None, std_teacher: Any = None,
                 weights: str = "paper", lambda_adv: float | None = None, lambda_std: float | None = None,
                 temperature: float = 2.0, teacher_checkpoint: str = "best") -> None:
        if weights not in TEACHER_PRESETS:
            raise ConfigError(f"criterion.weights: expected {' or '.join(TEACHER_PRESETS)}, got {weights!r}")
        preset_adv, preset_std = TEACHER_PRESETS[weights]
        self.lambda_adv = preset_adv if lambda_adv is None else lambda_adv
        self.lambda_std = preset_std if lambda_std is None else lambda_std
        if adv_teacher is None:
            self.lambda_adv = 0.0 if lambda_adv is None else self.lambda_adv
        if std_teacher is None:
            self.lambda_std = 0.0 if lambda_std is None else self.lambda_std
        if min(self.lambda_adv, self.lambda_std) < 0 or self.lambda_adv + self.lambda_std > 1:
            raise ConfigError("criterion kd needs lambda_adv, lambda_std >= 0 with a sum <= 1")
        if (self.lambda_adv > 0 and adv_teacher is None) or (self.lambda_std > 0 and std_teacher is None):
            raise ConfigError("criterion kd: a teacher with a positive weight needs adv_teacher / std_teacher")
        self.temperature = temperature
        self.sources = {"adv": adv_teacher, "std": std_teacher}
        self.teacher_checkpoint = teacher_checkpoint
        self.teachers: dict[str, nn.Module] = dict(teachers or {})

    def teacher_specs(self) -> dict[str, Any]:
        weights = {"adv": self.lambda_adv, "std": self.lambda_std}
        return {role: spec for role, spec in self.sources.items() if spec is not None and weights[role] > 0}

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, inputs: torch.Tensor,
                 features: torch.Tensor | None = None) -> torch.Tensor:
        loss = (1 - self.lambda_adv - self.lambda_std) * F.cross_entropy(logits, y)
        for role, weight in (("adv", self.lambda_adv), ("std", self.lambda_std)):
            if weight > 0:
                with torch.no_grad():
                    teacher = self.teachers[role](inputs)
                loss = loss + weight * distillation(logits, teacher, self.temperature)
        return loss

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "lambda_adv": self.lambda_adv, "lambda_std": self.lambda_std,
                "temperature": self.temperature, "teachers": dict(self.sources),
                "teacher_checkpoint": self.teacher_checkpoint}
