"""Loss landscapes: per-LSC-group weight-loss curves (Yu et al. 2022, Fig. 2), the weight-space robustness
curve and the input loss surface (Chen et al. 2021, Figs. 6-7)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from atlens.analysis.directions import filter_normalized_direction, moved, random_unit_direction, weight_norm
from atlens.analysis.lsc import EDGES, lsc_groups
from atlens.attacks import ThreatModel
from atlens.attacks.pgd import mode
from atlens.data import BatchLoader, ImageTensors
from atlens.evaluation.accuracy import Attack
from atlens.seeding import seeded

GROUP_NAMES = [f"[{lo:g}, {hi:g})" for lo, hi in zip(EDGES[:-1], EDGES[1:])] + [f"≥ {EDGES[-1]:g}"]


def per_example_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Cross-entropy of every example, in eval mode, without gradients."""
    losses = []
    with torch.no_grad(), mode(model, False):
        for start in range(0, len(y), batch_size):
            logits = model(x[start:start + batch_size])
            losses.append(F.cross_entropy(logits.float(), y[start:start + batch_size], reduction="none"))
    return torch.cat(losses)


def craft(model: nn.Module, data: ImageTensors, attack: Attack, device: torch.device | str, seed: int = 0,
          batch_size: int = 256, progress: Callable | None = None) -> ImageTensors:
    """Adversarial versions of ``data`` against ``model`` (eval mode, a forked seeded RNG)."""
    device = torch.device(device)
    parts = []
    batches = BatchLoader(data, batch_size, device)
    with seeded(seed, device), mode(model, False):
        for x, y in progress(batches) if progress else batches:
            parts.append(attack(model, x, y).detach())
    return ImageTensors(torch.cat(parts), data.labels.to(device))


def lsc_landscape(model: nn.Module, adversarial: ImageTensors, mus: Sequence[float], directions: int = 5,
                  seed: int = 0, progress: Callable | None = None) -> dict[str, Any]:
    """g_j(μ): mean loss of LSC group j (groups fixed at w) at w + μ·d, averaged over filter-normalised
    random directions d. Groups with no example are reported with ``None``."""
    x, y = adversarial.images, adversarial.labels
    groups = lsc_groups(per_example_losses(model, x, y))
    counts = torch.bincount(groups, minlength=len(GROUP_NAMES))
    generator = torch.Generator().manual_seed(seed)
    curves = torch.zeros(directions, len(mus), len(GROUP_NAMES))
    for k in progress(range(directions)) if progress else range(directions):
        d = filter_normalized_direction(model, generator)
        for i, mu in enumerate(mus):
            with moved(model, d, mu):
                losses = per_example_losses(model, x, y)
            sums = torch.zeros(len(GROUP_NAMES), device=losses.device).index_add_(0, groups, losses)
            curves[k, i] = (sums / counts.clamp_min(1).to(sums)).cpu()
    mean = curves.mean(0)
    return {"mu": list(mus), "directions": directions, "examples": len(y), "groups": GROUP_NAMES,
            "group_sizes": counts.tolist(),
            "loss": {name: (mean[:, j].tolist() if counts[j] else None) for j, name in enumerate(GROUP_NAMES)}}


def robust_loss(model: nn.Module, data: ImageTensors, attack: Attack, device: torch.device | str,
                seed: int = 0) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on adversarial examples crafted against ``model`` itself."""
    adversarial = craft(model, data, attack, device, seed)
    labels = adversarial.labels
    losses = per_example_losses(model, adversarial.images, labels)
    with torch.no_grad(), mode(model, False):
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in BatchLoader(adversarial, 256, device))
    return losses.mean().item(), correct / len(labels)


def weight_robustness_curve(model: nn.Module, data: ImageTensors, attack: Attack, radii: Sequence[float],
                            directions: int, device: torch.device | str, seed: int = 0,
                            progress: Callable | None = None) -> dict[str, Any]:
    """Robust test loss at w + r·‖w‖·u for random unit directions u of the conv/linear weights; each
    perturbed model is attacked afresh. Radii are relative to ‖w‖ so that checkpoints compare."""
    generator = torch.Generator().manual_seed(seed)
    base_loss, base_acc = robust_loss(model, data, attack, device, seed)
    scale = weight_norm(model)
    losses = torch.full((directions, len(radii)), base_loss)
    accs = torch.full((directions, len(radii)), base_acc)
    for k in progress(range(directions)) if progress else range(directions):
        u = random_unit_direction(model, generator)
        for i, r in enumerate(radii):
            if r:
                with moved(model, u, r * scale):
                    losses[k, i], accs[k, i] = robust_loss(model, data, attack, device, seed)
    return {"radii": list(radii), "weight_norm": scale, "directions": directions, "examples": len(data),
            "robust_loss_mean": losses.mean(0).tolist(), "robust_loss_std": losses.std(0).tolist(),
            "robust_acc_mean": accs.mean(0).tolist()}


def input_loss_surface(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                       span: float = 2.0, points: int = 21, seed: int = 0) -> dict[str, Any]:
    """z(a, b) = L(x + a·r1 + b·r2) for each example, r1 = sign ∇x L, r2 Rademacher, a, b ∈ [−span·ε, span·ε].
    Inputs leave the valid box on purpose: the surface describes the model, not the threat model."""
    generator = torch.Generator().manual_seed(seed)
    with mode(model, False):
        x = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        r1 = torch.autograd.grad(loss, x)[0].sign()
    r2 = (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(x)
    steps = torch.linspace(-span * threat.epsilon, span * threat.epsilon, points, device=x.device)
    a, b = torch.meshgrid(steps, steps, indexing="ij")
    z = torch.empty(len(y), points, points)
    with torch.no_grad(), mode(model, False):
        for n in range(len(y)):
            grid = x[n].detach() + a.reshape(-1, 1, 1, 1) * r1[n] + b.reshape(-1, 1, 1, 1) * r2[n]
            logits = model(grid).float()
            z[n] = F.cross_entropy(logits, y[n].expand(len(grid)), reduction="none").view(points, points).cpu()
    centre = points // 2
    return {"steps": steps.tolist(), "loss": z.tolist(), "loss_at_x": z[:, centre, centre].tolist(),
            "max_rise": (z.flatten(1).max(1).values - z[:, centre, centre]).tolist()}
