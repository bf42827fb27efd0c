"""A researcher's own package, outside atlens: one component of every kind, registered at import.

``write_package(folder)`` writes it as ``folder/toylab/methods.py``; a run config names it under ``imports`` and
every entry point (``atlens train``, ``--dry-run``, ``--resume``, ``torchrun``, ``atlens sweep``, ``eval``,
``analyze``, ``report``) finds its components. ``registries_restored`` undoes its registrations, so the rest of a
test session sees atlens' own registries only.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

SOURCE = '''
"""toylab: one of every kind of atlens component, written as a researcher would, outside atlens."""

import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from atlens.analysis.runner import ANALYSES
from atlens.evaluation.attacks import ATTACKS, NamedAttack
from atlens.hooks import Callback
from atlens.models import MODELS
from atlens.models.base import ImageClassifier, Normalize
from atlens.plots.figure import plt, save_figure
from atlens.training.callbacks import CALLBACKS
from atlens.training.criteria import CRITERIA, CrossEntropy
from atlens.training.early_stop import RULES, Rule
from atlens.training.loggers import LOGGERS, Logger
from atlens.training.objectives import OBJECTIVES, Objective, TrainingBatch
from atlens.training.optimizers import OPTIMIZERS
from atlens.training.samplers import SAMPLERS
from atlens.training.schedules import SCHEDULES
from atlens.weightspace import AVERAGING, PERTURBATIONS, WeightAveraging, WeightPerturbation, perturbable_weights


@MODELS.register("toy_mlp")
def toy_mlp(num_classes, channels, image_size, mean, std, hidden: int = 16):
    body = nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size ** 2, hidden), nn.ReLU())
    return ImageClassifier(Normalize(mean, std), body, hidden, num_classes)


@OBJECTIVES.register("lab_noise_at")
class NoiseAT(Objective):
    """Cross-entropy on inputs with uniform noise of size scale * epsilon (no gradient attack)."""

    name = "lab_noise_at"

    def __init__(self, attack, scale: float = 1.0):
        super().__init__(attack)
        self.scale = scale

    def craft(self, model, x, y, noise):
        delta = noise.uniform(x, -1, 1) * self.scale * self.attack.threat.epsilon
        return TrainingBatch(x, (x + delta).clamp(0, 1), y)

    def describe(self):
        return {"name": self.name, "scale": self.scale}


@CRITERIA.register("lab_focal")
class Focal(CrossEntropy):
    name = "lab_focal"

    def __init__(self, gamma: float = 2.0):
        self.gamma = gamma

    def __call__(self, logits, y, inputs, features=None):
        log_p = F.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        return (-(1 - log_p.exp()) ** self.gamma * log_p).mean()

    def describe(self):
        return {"name": self.name, "gamma": self.gamma}


@PERTURBATIONS.register("lab_shrink")
class Shrink(WeightPerturbation):
    name = "lab_shrink"

    def __init__(self, gamma: float = 0.1):
        super().__init__()
        self.gamma = gamma

    def active(self, epoch):
        return True

    def perturb(self, model, loss_fn, epoch, all_sum):
        weights = perturbable_weights(model)
        self._keep_originals(weights)
        self._set(weights, [-self.gamma * w.detach() for w in weights])

    def describe(self):
        return {"name": self.name, "gamma": self.gamma}


@AVERAGING.register("lab_step_average")
class EveryStepEMA(WeightAveraging):
    """An exponential moving average of the weights, updated at every step from the first."""

    name = "lab_step_average"

    def __init__(self, decay: float = 0.5):
        super().__init__()
        self.decay = decay

    def _ensure(self, model):
        if self.averaged is None:
            self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay))
        return self.averaged

    def on_step_end(self, loop, out):
        self._ensure(loop.model).update_parameters(loop.model)

    def describe(self):
        return {"name": self.name, "decay": self.decay}


@SAMPLERS.register("toy_first")
class FirstExamples:
    """Draws among the first ``limit`` extra examples only."""

    name = "toy_first"

    def __init__(self, data, limit: int = 8):
        self.limit = min(limit, len(data))

    def draw(self, n, generator):
        return torch.randint(self.limit, (n,), generator=generator)

    def describe(self):
        return {"name": self.name, "limit": self.limit}


@OPTIMIZERS.register("toy_sgd")
def toy_sgd(model, lr, momentum: float = 0.5):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


@SCHEDULES.register("toy_halving")
def toy_halving(lr, factor: float = 0.5):
    return lambda epoch: lr * factor ** math.floor(epoch)


class TestAccuracyRule(Rule):
    name, signal = "toy_best_test", "test_robust_acc"

    def __init__(self, patience, margin: float = 0.0):
        self.patience, self.margin, self.best, self.stale = patience, margin, -1.0, 0

    def observe(self, row, selectable=True):
        value = row.get(self.signal)
        if value is None or not selectable:
            return False, self.stale >= self.patience
        if value > self.best + self.margin:
            self.best, self.stale = value, 0
            return True, False
        self.stale += 1
        return False, self.stale >= self.patience

    def describe(self):
        return {"name": self.name, "patience": self.patience, "margin": self.margin}


RULES.register("toy_best_test")(TestAccuracyRule)


@CALLBACKS.register("toy_steps")
class Steps(Callback):
    """Counts optimiser steps (kept in checkpoints); stops the process after an epoch when TOY_STOP_AFTER says."""

    def __init__(self, label: str = "steps"):
        self.label, self.steps = label, 0

    def on_step_end(self, loop, out):
        self.steps += 1

    def on_epoch_end(self, loop, row):
        row[f"toy_{self.label}"] = self.steps
        if os.environ.get("TOY_STOP_AFTER") == str(loop.epoch):
            raise KeyboardInterrupt

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]

    def describe(self):
        return {"name": "toy_steps", "label": self.label}


@LOGGERS.register("toy_jsonl")
class JsonLines(Logger):
    """Every epoch's numbers as a line of RUN/<file>."""

    name, options = "toy_jsonl", ("file",)

    def __init__(self, run, config, file: str = "toy-log.jsonl"):
        super().__init__(run, config)
        self.file = file

    def open(self, resume_id):
        with open(self.run.path / self.file, "a") as handle:
            handle.write(json.dumps({"opened": resume_id is not None, "epochs": self.config["optim"]["epochs"]})
                         + "\\n")
        return "toy-run"

    def log(self, metrics, step):
        with open(self.run.path / self.file, "a") as handle:
            handle.write(json.dumps({"step": step, **metrics}) + "\\n")

    def finish(self, summary, files, error):
        with open(self.run.path / self.file, "a") as handle:
            handle.write(json.dumps({"finished": error is None}) + "\\n")


@ATTACKS.register("toy_noise", label=lambda m: "Noise", cost=lambda m: 1 / 3, gradient=False)
def toy_noise(match, ctx):
    epsilon = ctx.threat.epsilon
    return NamedAttack("toy_noise", lambda model, x, y: (x + epsilon * torch.sign(torch.randn_like(x))).clamp(0, 1),
                       {"epsilon": epsilon})


def _norms(ctx):
    results = {name: {"epoch": epoch, "weight_norm": float(torch.cat([p.detach().flatten()
                                                                       for p in model.parameters()]).norm())}
               for name, (model, epoch) in ctx.models.items()}
    figure, axis = plt.subplots(figsize=(3, 2))
    axis.bar(list(results), [r["weight_norm"] for r in results.values()])
    axis.set_xlabel("checkpoint")
    axis.set_ylabel("weight norm")
    save_figure(figure, ctx.out / "toy_norms.png")
    return {"parameters": {}, "checkpoints": results}


ANALYSES.register("toy_norms", lambda c: 0.0, "Weight norms (toylab)",
                  lambda r: ", ".join(f"{k}: {v['weight_norm']:.2f}" for k, v in r["checkpoints"].items()))(_norms)
'''

KINDS = ("objective", "criterion", "perturbation", "averaging", "sampler", "optimizer", "schedule", "early_stop",
         "callbacks", "loggers")


def write_package(folder: Path) -> Path:
    package = Path(folder) / "toylab"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "methods.py").write_text(SOURCE)
    return package


def outside_config(base: dict) -> dict:
    """``base`` (a synthetic_config) with every component from toylab, and extra data for its sampler."""
    return {**base, "imports": ["toylab.methods"],
            "data": {**base["data"], "per_class": 48},
            "model": {"name": "toy_mlp", "hidden": 16},
            "objective": {"name": "lab_noise_at", "scale": 0.5},
            "criterion": {"name": "lab_focal", "gamma": 1.0},
            "perturbation": {"name": "lab_shrink", "gamma": 0.01},
            "averaging": {"name": "lab_step_average", "decay": 0.8},
            "optim": {**base["optim"], "name": "toy_sgd", "momentum": 0.8, "lr": 0.05,
                      "schedule": {"name": "toy_halving", "factor": 0.5}},
            "early_stop": {"rule": {"name": "toy_best_test", "margin": 0.001}, "patience": 3},
            "extra": {"source": "rest", "fraction": 0.25, "sampler": {"name": "toy_first", "limit": 16}},
            "callbacks": [{"name": "toy_steps", "label": "seen"}, "toy_steps"],
            "loggers": [{"name": "toy_jsonl", "file": "toy.jsonl"}]}


def _registries() -> list[dict]:
    from atlens.analysis.runner import ANALYSES
    from atlens.data import DATASETS
    from atlens.evaluation.attacks import ATTACKS
    from atlens.models import MODELS
    from atlens.training.callbacks import CALLBACKS
    from atlens.training.criteria import CRITERIA
    from atlens.training.early_stop import RULES
    from atlens.training.loggers import LOGGERS
    from atlens.training.objectives import OBJECTIVES
    from atlens.training.optimizers import OPTIMIZERS
    from atlens.training.samplers import SAMPLERS
    from atlens.training.schedules import SCHEDULES
    from atlens.weightspace import AVERAGING, PERTURBATIONS

    registries = [MODELS, DATASETS, OBJECTIVES, CRITERIA, PERTURBATIONS, AVERAGING, SAMPLERS, OPTIMIZERS, SCHEDULES,
                  RULES, CALLBACKS, LOGGERS]
    return [r._builders for r in registries] + [ATTACKS.kinds, ANALYSES.entries]


def forget_package() -> None:
    """As if toylab had never been imported (its registrations stay until ``registries_restored`` ends)."""
    for name in [m for m in sys.modules if m == "toylab" or m.startswith("toylab.")]:
        del sys.modules[name]


@contextmanager
def registries_restored():
    saved = [dict(table) for table in _registries()]
    try:
        yield
    finally:
        for table, before in zip(_registries(), saved):
            table.clear()
            table.update(before)
        forget_package()
