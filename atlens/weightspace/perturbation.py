"""Adversarial weight perturbation: AWP (Wu et al. 2020) and RWP (Yu et al. 2022).

Both find a perturbation v of the conv/linear weights (never BatchNorm parameters or biases), add it
in place, let the optimiser take its step at w + v (gradient and weight decay at w + v), and subtract
v again. No model copy and no state-dict reloads: the ascent runs on the model itself, with the
BatchNorm running statistics restored afterwards (the references' proxy models have their own).

The ascent is on the training objective's own loss, given as a closure ``loss_fn(model) -> per-example
losses`` (AWP-TRADES ascends CE(f(x), y) + β·KL(f(x) ‖ f(x')), as the AWP reference does).

Under data parallelism every rank ascends along the gradient of the *global* batch (its per-example
losses summed over ranks, divided by the global batch size) and RWP's stopping test counts the
examples below c_min over all ranks, so v is the one a single process computes and identical on
every rank: the optimiser step at w + v, and the replicas, stay the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from atlens.devicesync import deliberate_host_read
from atlens.hooks import Callback
from atlens.models.weights import frozen_batchnorm_statistics, perturbable_weights
from atlens.registry import Registry

# loss_fn(model) -> the objective's per-example loss on the current batch, at the model's current weights
LossFn = Callable[[nn.Module], torch.Tensor]
# all_sum(tensor) -> its sum over data-parallel ranks (the tensor itself in one process)
AllSum = Callable[[torch.Tensor], torch.Tensor]


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def global_gradient(total: torch.Tensor, examples: int, weights: list[nn.Parameter],
                    all_sum: AllSum) -> list[torch.Tensor]:
    """∇ of (sum of ``total`` over ranks) / (examples over ranks): the gradient one process computes on the
    global batch, identical on every rank (one flat all-reduce for all layers)."""
    grads = torch.autograd.grad(total, weights)
    # the example count is filled on the device (torch.tensor of a host number would be a copy the host waits for)
    flat = torch.cat([g.reshape(-1) for g in grads] + [grads[0].new_full((1,), float(examples))])
    flat = all_sum(flat)
    flat = flat[:-1] / flat[-1]
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]


def scale_to(direction: list[torch.Tensor], weights: list[torch.Tensor], gamma: float,
             scope: str) -> list[torch.Tensor]:
    """v = γ·‖w‖/‖d‖·d, per layer or globally over all perturbed weights."""
    if scope == "layer":
        return [gamma * w.norm() / (d.norm() + 1e-12) * d for d, w in zip(direction, weights)]
    w_norm = torch.sqrt(sum((w.detach() ** 2).sum() for w in weights))
    d_norm = torch.sqrt(sum((d**2).sum() for d in direction))
    factor = gamma * w_norm / (d_norm + 1e-12)
    return [factor * d for d in direction]


class WeightPerturbation(Callback):
    """``applied(model, loss_fn, epoch)`` is the block in which the training loss and the optimiser step
    run at w + v: entering computes v and sets the weights to w + v; leaving sets them to
    w + (step taken at w + v). The originals are kept, so a block without a step gives back w bit for bit.
    As a callback it adds its per-epoch statistics to the metrics row."""

    phase = "statistics"

    name = "none"
    loss_threshold: float | None = None  # a loss level the method acts on (RWP's c_min), for LSC statistics

    def __init__(self) -> None:
        self._original: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []

    def active(self, epoch: int) -> bool:
        return False

    @contextmanager
    def applied(self, model: nn.Module, loss_fn: LossFn, epoch: int, all_sum: AllSum = _local) -> Iterator[None]:
        self.perturb(model, loss_fn, epoch, all_sum)
        try:
            yield
        finally:
            self.restore(model)

    def perturb(self, model: nn.Module, loss_fn: LossFn, epoch: int, all_sum: AllSum = _local) -> None:
        """Compute v from the global batch and move the weights to w + v (a no-op when inactive)."""

    def _keep_originals(self, weights: list[nn.Parameter]) -> list[torch.Tensor]:
        self._original = [w.detach().clone() for w in weights]
        return self._original

    def _set(self, weights: list[nn.Parameter], v: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for w, original, d in zip(weights, self._original, v):
                w.copy_(original + d)
        self._v = v

    def restore(self, model: nn.Module) -> None:
        if not self._v:
            self._original = []
            return
        with torch.no_grad():
            for w, original, d in zip(perturbable_weights(model), self._original, self._v):
                step = w - (original + d)  # what the optimiser did at w + v
                w.copy_(original + step)
        self._original, self._v = [], []

    @property
    def perturbation(self) -> list[torch.Tensor]:
        return self._v

    def epoch_stats(self) -> dict[str, Any]:
        return {}

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        row.update(self.epoch_stats())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


PERTURBATIONS: Registry[WeightPerturbation] = Registry("perturbation")


@PERTURBATIONS.register("none")
def _none() -> WeightPerturbation:
    return WeightPerturbation()


@PERTURBATIONS.register("awp")
class AWP(WeightPerturbation):
    """One ascent step on the objective's loss, rescaled per layer to γ·‖w_l‖ (or globally)."""

    name = "awp"

    def __init__(self, gamma: float = 0.01, warmup: int = 0, scope: str = "layer") -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        if scope not in ("layer", "global"):
            raise ValueError(f"scope: expected layer or global, got {scope!r}")
        self.gamma, self.warmup, self.scope = gamma, warmup, scope

    def active(self, epoch: int) -> bool:
        return epoch >= self.warmup and self.gamma > 0

    def perturb(self, model: nn.Module, loss_fn: LossFn, epoch: int, all_sum: AllSum = _local) -> None:
        if not self.active(epoch):
            return
        weights = perturbable_weights(model)
        originals = self._keep_originals(weights)
        with frozen_batchnorm_statistics(model):
            losses = loss_fn(model)
            grads = global_gradient(losses.sum(), len(losses), weights, all_sum)
        self._set(weights, scale_to(grads, originals, self.gamma, self.scope))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "gamma": self.gamma, "warmup": self.warmup, "scope": self.scope}


@PERTURBATIONS.register("rwp")
class RWP(AWP):
    """Yu et al. 2022, Algorithm 1: ascend only on examples whose loss at w + v is at most c_min,
    up to K2 steps, accumulating raw steps and rescaling the sum to γ·‖w‖ (global by default).

    Every step forwards the whole batch in training mode, as the reference does: with BatchNorm
    the loss of one example depends on the whole batch (its statistics), so forwarding only the
    masked examples would neither give the reference's mask nor its gradient (cosine 0.4-0.9 to
    it on a trained PreActResNet). The mask and the ascent gradient share that one pass."""

    name = "rwp"

    def __init__(self, gamma: float = 0.01, c_min: float = 1.7, steps: int = 10, warmup: int = 0,
                 scope: str = "global") -> None:
        super().__init__(gamma, warmup, scope)
        if c_min < 0:
            raise ValueError(f"c_min must be >= 0, got {c_min}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.c_min, self.steps = c_min, steps
        self.loss_threshold = c_min
        self._ascents = self._batches = 0

    def perturb(self, model: nn.Module, loss_fn: LossFn, epoch: int, all_sum: AllSum = _local) -> None:
        if not self.active(epoch):
            return
        weights = perturbable_weights(model)
        originals = self._keep_originals(weights)
        direction: list[torch.Tensor] | None = None
        ascents = 0
        with frozen_batchnorm_statistics(model):
            for _ in range(self.steps):
                losses = loss_fn(model)
                below = losses <= self.c_min
                # stop when no example of the global batch is below c_min (every rank decides alike)
                with deliberate_host_read("RWP stops its ascent when no example is below c_min"):
                    if not bool(all_sum(below.sum().float()) > 0):
                        break
                # the reference divides by the whole batch size, not by the number selected
                # (the masked sum in a fixed shape: indexing by the mask would size its output by the data)
                grads = global_gradient(torch.where(below, losses, 0.0).sum(), len(losses), weights, all_sum)
                direction = grads if direction is None else [d + g for d, g in zip(direction, grads)]
                self._set(weights, scale_to(direction, originals, self.gamma, self.scope))
                ascents += 1
        self._ascents += ascents
        self._batches += 1

    def epoch_stats(self) -> dict[str, Any]:
        stats = {"rwp_mean_ascent_steps": self._ascents / max(self._batches, 1)}
        self._ascents = self._batches = 0
        return stats

    def epoch_state_dict(self) -> dict[str, Any]:
        return {"ascents": self._ascents, "batches": self._batches}

    def load_epoch_state_dict(self, state: dict[str, Any]) -> None:
        self._ascents, self._batches = state["ascents"], state["batches"]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "c_min": self.c_min, "steps": self.steps}

