"""Clean and adversarial accuracy over a dataset, batched, in eval mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from atlens.attacks import ThreatModel, pgd
from atlens.attacks.pgd import mode
from atlens.data import BatchLoader, ImageTensors
from atlens.models import check_contract
from atlens.seeding import seeded

# attack(model, x, y) -> x_adv
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PGDAttack:
    """PGD-k in eval mode; a picklable, printable attack for evaluation and analyses."""

    threat: ThreatModel
    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    loss: str = "ce"
    kappa: float = 0.0  # CW confidence, for the margin loss
    random_start: bool = True

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pgd(model, x, y, self.threat, self.steps, self.step_size, self.loss, self.restarts, bn_mode="eval",
                   kappa=self.kappa, start="uniform" if self.random_start else "zero")

    def describe(self) -> dict:
        step = self.threat.default_step_size() if self.step_size is None else self.step_size
        return {"name": f"pgd{self.steps}" if self.loss == "ce" else f"pgd{self.steps}-{self.loss}",
                "norm": self.threat.norm, "epsilon": self.threat.epsilon, "steps": self.steps,
                "step_size": step, "restarts": self.restarts, "loss": self.loss,
                "random_start": self.random_start}


@dataclass
class Accuracy:
    clean: float
    robust: float
    examples: int


class FeatureObserver(Protocol):
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None: ...


def evaluate(model: nn.Module, data: ImageTensors, attack: Attack | None, batch_size: int = 256,
             device: torch.device | str = "cpu", seed: int = 0, progress: Callable | None = None,
             observers: Sequence[FeatureObserver] = (), clean: bool = True,
             crafting: Callable[[], AbstractContextManager] = nullcontext) -> Accuracy:
    """Clean and robust accuracy; the attack's random starts come from a forked, seeded RNG so that
    evaluating never shifts the training RNG stream and repeats give the same number.

    ``observers`` receive the penultimate features of the attacked inputs (of the clean inputs when
    ``attack`` is None): analyses such as CAS ride on the evaluation's own forward pass. With
    ``clean=False`` the clean forward pass is skipped (clean accuracy is then NaN). ``crafting`` is the
    precision the attack runs in (e.g. bf16 autocast); the attacked inputs are judged in fp32 regardless.
    """
    device = torch.device(device)
    head = check_contract(model) if observers else None
    correct_clean = correct_robust = total = 0
    with seeded(seed, device), mode(model, False):
        batches = BatchLoader(data, batch_size, device)
        for x, y in progress(batches) if progress else batches:
            with crafting():
                inputs = attack(model, x, y) if attack is not None else x
            with torch.no_grad():
                if head is None:
                    logits = model(inputs)
                else:
                    features = model.features(inputs)
                    for observer in observers:
                        observer.update(features, y)
                    logits = head(features)
                clean_logits = logits if attack is None else model(x) if clean else None
            if clean_logits is not None:
                correct_clean += (clean_logits.argmax(1) == y).sum().item()
            correct_robust += (logits.argmax(1) == y).sum().item()
            total += len(y)
    total = max(total, 1)
    nan = float("nan")
    return Accuracy(correct_clean / total if clean or attack is None else nan,
                    correct_robust / total if attack is not None else nan, total)


def seconds_per_gradient(model: nn.Module, data: ImageTensors, device: torch.device | str = "cpu",
                         batch_size: int = 256) -> float:
    """Seconds of one input-gradient evaluation per example (forward and backward, eval mode), timed on one
    batch of ``data`` after a warm-up: the unit of every time estimate."""
    import time

    x, y = next(iter(BatchLoader(data.head(batch_size), batch_size, device)))
    x = x.clone().requires_grad_(True)

    def gradient() -> None:
        torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)

    with mode(model, False):
        gradient()  # warm-up
        started = time.perf_counter()
        gradient()
        return (time.perf_counter() - started) / len(y)

