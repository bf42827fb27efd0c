"""A new objective, weight perturbation and callback, registered from outside atlens, train with it:
no atlens file is edited to add a method."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atlens.callback import Callback
from atlens.config import config_from_dict
from atlens.training.objectives import OBJECTIVES, Objective, TrainingBatch
from atlens.training.run import train_to_completion
from atlens.weightspace import PERTURBATIONS, WeightPerturbation, perturbable_weights
from tests.conftest import synthetic_config


@OBJECTIVES.register("toy_noise_at")
class NoiseAT(Objective):
    """Cross-entropy on inputs with uniform noise of size ε (a toy: no gradient attack)."""

    name = "toy_noise_at"

    def __init__(self, attack, scale: float = 1.0) -> None:
        super().__init__(attack)
        self.scale = scale
        self.crafted = 0

    def craft(self, model, x, y):
        self.crafted += 1
        noise = torch.empty_like(x).uniform_(-1, 1) * self.scale * self.attack.threat.epsilon
        return TrainingBatch(x, (x + noise).clamp(0, 1), y)


@PERTURBATIONS.register("toy_shrink")
class Shrink(WeightPerturbation):
    """Moves the weights to (1 − γ)·w for the step, using the objective's loss only to count calls."""

    name = "toy_shrink"

    def __init__(self, gamma: float = 0.1) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma, self.losses_seen = gamma, 0

    def active(self, epoch):
        return True

    def perturb(self, model, loss_fn, epoch):
        self.losses_seen += len(loss_fn(model))
        weights = perturbable_weights(model)
        self._keep_originals(weights)
        self._set(weights, [-self.gamma * w.detach() for w in weights])

    def epoch_stats(self):
        return {"toy_losses_seen": self.losses_seen}


class GradientNorm(Callback):
    """Records the global gradient norm of the last step of each epoch, and keeps a running count."""

    key = "toy_gradient_norm"

    def __init__(self) -> None:
        self.steps = 0
        self.norm = None

    def on_step_end(self, loop, out):
        self.steps += 1
        grads = [p.grad for p in loop.model.parameters() if p.grad is not None]
        self.norm = torch.sqrt(sum((g**2).sum() for g in grads)).item()

    def on_epoch_end(self, loop, row):
        row["toy_gradient_norm"], row["toy_steps"] = self.norm, self.steps

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_a_toy_objective_perturbation_and_callback_from_outside_train_with_atlens(tmp_path):
    cfg = config_from_dict(synthetic_config(objective={"name": "toy_noise_at", "scale": 0.5},
                                            perturbation={"name": "toy_shrink", "gamma": 0.05},
                                            **{"optim.epochs": 2}))
    callback = GradientNorm()
    summary = train_to_completion(cfg, tmp_path / "run", callbacks=[callback], log=lambda m: None)
    rows = [__import__("json").loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    batches = 256 // 64
    assert [r["toy_steps"] for r in rows] == [batches, 2 * batches]
    assert all(r["toy_gradient_norm"] > 0 for r in rows)
    assert rows[-1]["toy_losses_seen"] == 2 * 256  # the perturbation saw the objective's per-example loss
    assert summary["best_clean_acc"] > 0.25
    methods = __import__("json").loads((tmp_path / "run" / "methods.json").read_text())
    assert methods["objective"]["name"] == "toy_noise_at" and methods["perturbation"]["name"] == "toy_shrink"
    # the default per-example loss of an objective is CE on its training inputs
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    batch = TrainingBatch(x, x, y)
    objective = OBJECTIVES.get("toy_noise_at")
    assert objective is NoiseAT
    expected = F.cross_entropy(model(x), y, reduction="none")
    assert torch.allclose(Objective.per_example_loss(None, model, batch), expected)
