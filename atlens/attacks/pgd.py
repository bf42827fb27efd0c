"""PGD, FGSM and FGSM-RS.

Crafting differentiates with respect to δ only: parameters are frozen for the duration, so no
parameter gradient is computed or accumulated (the references call ``loss.backward()`` and pay for
the weight gradients on every attack step).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from atlens.attacks.threat import ThreatModel
from atlens.seeding import GLOBAL_NOISE, Noise

LOSSES = ("ce", "margin", "kl")
STARTS = ("uniform", "zero", "normal")


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients inside the block (restored after, even on error)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Put every module in train or eval mode inside the block, restoring each module's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


BN_MODES = ("eval", "train", "frozen")


@contextmanager
def crafting_mode(model: nn.Module, bn_mode: str) -> Iterator[None]:
    """The model's mode while crafting: ``eval`` (BatchNorm normalises with its running statistics), ``train``
    (batch statistics, and every forward pass updates the running ones: the PGD-AT references), or ``frozen``
    (batch statistics, running statistics untouched: Gowal et al.'s and Wang et al.'s ``track_bn_stats(False)``)."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
    untracked = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats] if bn_mode == "frozen" else []
    with mode(model, bn_mode != "eval"):
        for m in untracked:
            m.track_running_stats = False  # in train mode: batch statistics, no update of the buffers
        try:
            yield
        finally:
            for m in untracked:
                m.track_running_stats = True


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """Per-example CW margin max_{j≠y} z_j − z_y, capped at κ above zero (κ=0: plain margin)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    margin = others - true
    return margin.clamp(max=kappa) if kappa > 0 else margin


def per_example_loss(name: str, logits: torch.Tensor, y: torch.Tensor, reference: torch.Tensor | None = None,
                     kappa: float = 0.0) -> torch.Tensor:
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if name == "margin":
        return margin_loss(logits, y, kappa)
    if name == "kl":
        # KL(p_clean || p_adv), the TRADES inner objective
        return F.kl_div(F.log_softmax(logits, 1), reference, reduction="none").sum(1)
    raise ValueError(f"unknown attack loss {name!r}; available: {', '.join(LOSSES)}")


def _start(threat: ThreatModel, x: torch.Tensor, start: str, noise: Noise) -> torch.Tensor:
    if start == "uniform":
        return threat.random_start(x, noise)
    if start == "normal":
        return threat.project(0.001 * noise.normal(x), x)
    if start == "zero":
        return torch.zeros_like(x)
    raise ValueError(f"unknown start {start!r}; available: {', '.join(STARTS)}")


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    steps: int = 10,
    step_size: float | None = None,
    loss: str = "ce",
    restarts: int = 1,
    start: str = "uniform",
    bn_mode: str = "eval",
    kappa: float = 0.0,
    noise: Noise = GLOBAL_NOISE,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss``; returns x + δ. With restarts, keeps per example the δ
    with the highest final loss. ``bn_mode`` is the model mode while crafting (``crafting_mode``);
    ``noise`` is where random starts are drawn from (torch's global generator by default)."""
    if steps < 1 or restarts < 1:
        raise ValueError("steps and restarts must be >= 1")
    alpha = threat.default_step_size() if step_size is None else step_size
    x = x.detach()
    # enable_grad: callers often evaluate under no_grad, and the attack needs ∇δ regardless
    with frozen(model), crafting_mode(model, bn_mode), torch.enable_grad():
        reference = None
        if loss == "kl":
            with torch.no_grad():
                reference = F.softmax(model(x), 1)
        best_x, best_loss = None, None
        for _ in range(restarts):
            delta = _start(threat, x, start, noise)
            for _ in range(steps):
                delta.requires_grad_(True)
                value = per_example_loss(loss, model(x + delta), y, reference, kappa).sum()
                (grad,) = torch.autograd.grad(value, delta)
                delta = threat.project(threat.ascent_step(delta.detach(), grad, alpha), x)
            x_adv = (x + delta).detach()
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                final = per_example_loss(loss, model(x_adv), y, reference, kappa)
            if best_x is None:
                best_x, best_loss = x_adv, final
            else:
                better = final > best_loss
                best_x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x_adv, best_x)
                best_loss = torch.maximum(final, best_loss)
        return best_x


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
         bn_mode: str = "eval") -> torch.Tensor:
    """One step of size ε from the clean input (the evaluation attack)."""
    return pgd(model, x, y, threat, steps=1, step_size=threat.epsilon, start="zero", bn_mode=bn_mode)


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            step_size: float | None = None, bn_mode: str = "train", noise: Noise = GLOBAL_NOISE) -> torch.Tensor:
    """Fast AT (Wong et al. 2020): uniform random start, one step of 1.25ε, project."""
    alpha = 1.25 * threat.epsilon if step_size is None else step_size
    return pgd(model, x, y, threat, steps=1, step_size=alpha, start="uniform", bn_mode=bn_mode, noise=noise)
