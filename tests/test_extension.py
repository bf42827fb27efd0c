"""A new objective, criterion, weight perturbation, weight averaging and callback, registered from outside
atlens, train with it: no atlens file is edited to add a method, and a builder declares only its own
options (atlens hands it only the arguments its signature takes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from atlens.config import config_from_dict
from atlens.hooks import Callback
from atlens.training.criteria import CRITERIA, CrossEntropy
from atlens.training.objectives import OBJECTIVES, Objective, TrainingBatch
from atlens.training.run import train_to_completion
from atlens.weightspace import AVERAGING, PERTURBATIONS, WeightAveraging, WeightPerturbation, perturbable_weights
from tests.conftest import synthetic_config


@OBJECTIVES.register("toy_noise_at")
class NoiseAT(Objective):
    """Cross-entropy on inputs with uniform noise of size ε (a toy: no gradient attack)."""

    name = "toy_noise_at"

    def __init__(self, attack, scale: float = 1.0) -> None:
        super().__init__(attack)
        self.scale = scale
        self.crafted = 0

    def craft(self, model, x, y, noise):
        self.crafted += 1
        delta = noise.uniform(x, -1, 1) * self.scale * self.attack.threat.epsilon
        return TrainingBatch(x, (x + delta).clamp(0, 1), y)


@CRITERIA.register("toy_focal")
class Focal(CrossEntropy):
    """Focal loss (Lin et al. 2017): a criterion with no teachers, taking only its own option."""

    name = "toy_focal"

    def __init__(self, gamma: float = 2.0) -> None:
        self.gamma, self.calls = gamma, 0

    def __call__(self, logits, y, inputs, features=None):
        self.calls += 1
        log_p = F.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        return (-(1 - log_p.exp()) ** self.gamma * log_p).mean()


@AVERAGING.register("toy_step_average")
class StepAverage(WeightAveraging):
    """An equal-weight average of the weights after every ``every``-th step (no run length needed)."""

    name = "toy_step_average"

    def __init__(self, every: int = 1) -> None:
        super().__init__()
        self.every, self.steps = every, 0

    def _ensure(self, model):
        if self.averaged is None:
            self.averaged = AveragedModel(model)
        return self.averaged

    def on_step_end(self, loop, out):
        self.steps += 1
        if self.steps % self.every == 0:
            self._ensure(loop.model).update_parameters(loop.model)


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

    def perturb(self, model, loss_fn, epoch, all_sum):
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


def test_a_toy_objective_criterion_perturbation_averaging_and_callback_from_outside_train_with_atlens(tmp_path):
    cfg = config_from_dict(synthetic_config(objective={"name": "toy_noise_at", "scale": 0.5},
                                            criterion={"name": "toy_focal", "gamma": 1.0},
                                            perturbation={"name": "toy_shrink", "gamma": 0.05},
                                            averaging={"name": "toy_step_average", "every": 2},
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
    assert methods["criterion"]["name"] == "toy_focal" and methods["averaging"]["name"] == "toy_step_average"
    assert [r["evaluated_model"] for r in rows] == ["toy_step_average"] * 2  # the average is what is evaluated
    # the default per-example loss of an objective is CE on its training inputs
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    batch = TrainingBatch(x, x, y)
    objective = OBJECTIVES.get("toy_noise_at")
    assert objective is NoiseAT
    expected = F.cross_entropy(model(x), y, reduction="none")
    assert torch.allclose(Objective.per_example_loss(None, model, batch), expected)
