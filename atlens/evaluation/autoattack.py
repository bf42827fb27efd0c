"""A thin adapter over ``pyautoattack``, a maintained port of the official AutoAttack code.

The official "standard" version runs APGD-CE (100 iterations), APGD-T (100 iterations, 9 target
classes), FAB-T (100 iterations, 9 target classes) and Square (5,000 queries). torchattacks'
AutoAttack is not faithful (10 iterations) and is not used.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import torch
from torch import nn

from atlens.attacks.pgd import mode
from atlens.errors import AtlensError, ConfigError

NORMS = {"linf": "Linf", "l2": "L2"}


class _FloatLogits(nn.Module):
    """The model with fp32 logits: under bf16 autocast the network computes in bf16, but AutoAttack's
    bookkeeping (Square's best losses, FAB's margins) writes logits into fp32 buffers and would refuse."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()


class AutoAttackAdapter:
    def __init__(self, model: nn.Module, norm: str, epsilon: float, num_classes: int, seed: int = 0,
                 version: str = "standard", device: torch.device | str = "cpu") -> None:
        try:
            from pyautoattack import AutoAttack
        except ImportError:
            raise AtlensError("AutoAttack needs the pyautoattack package: pip install pyautoattack") from None
        if norm not in NORMS:
            raise ConfigError(f"AutoAttack supports norms {', '.join(NORMS)}, got {norm!r}")
        self.model = model
        self.attack = AutoAttack(_FloatLogits(model), eps=epsilon, norm=NORMS[norm], version=version, seed=seed,
                                 device=device)
        # the official 9 target classes assume 10+ classes; with fewer there are only K-1 targets
        targets = min(9, num_classes - 1)
        self.attack.apgd_targeted.n_target_classes = targets
        self.attack.fab.n_target_classes = targets

    def parameters(self) -> dict[str, Any]:
        a = self.attack
        return {
            "implementation": "pyautoattack", "version": importlib.metadata.version("pyautoattack"),
            "attack_version": a.version, "attacks": list(a.attacks_to_run), "norm": a.norm, "epsilon": a.epsilon,
            "seed": a.seed, "apgd_ce_iterations": a.apgd.n_iter, "apgd_ce_restarts": a.apgd.n_restarts,
            "apgd_t_iterations": a.apgd_targeted.n_iter, "apgd_t_target_classes": a.apgd_targeted.n_target_classes,
            "fab_t_iterations": a.fab.n_iter, "fab_t_target_classes": a.fab.n_target_classes,
            "square_queries": a.square.n_queries,
        }

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial examples for (x, y), in the ``attack(model, x, y)`` form of atlens."""
        if model is not self.model:
            raise AtlensError("this AutoAttack adapter was built for another model")
        with mode(model, False):
            x_adv, _ = self.attack.run_standard_evaluation(x, y, batch_size=len(y))
        return x_adv.detach()
