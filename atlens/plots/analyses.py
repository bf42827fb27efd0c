"""Figures of ``atlens analyze``: one panel per checkpoint so checkpoints compare at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlens.plots.figure import plt, save_figure


def _panels(count: int, width: float = 4.2, height: float = 3.6):
    fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return fig, axes[0]


def plot_lsc_landscape(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Yu et al. Fig. 2: loss of each LSC group along a filter-normalised direction."""
    fig, axes = _panels(len(results))
    shared_top = max(max(v for curve in r["loss"].values() if curve for v in curve) for r in results.values())
    for ax, (name, r) in zip(axes, results.items()):
        for j, group in enumerate(r["groups"]):
            curve = r["loss"][group]
            if curve is not None:
                ax.plot(r["mu"], curve, color=plt.cm.viridis(j / (len(r["groups"]) - 1)),
                        label=f"{group} (n={r['group_sizes'][j]})")
        ax.set(title=f"{name}", xlabel="μ (filter-normalised direction)", ylabel="adversarial loss",
               ylim=(0, shared_top * 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, title="LSC group", title_fontsize=7)
    return save_figure(fig, path)


def plot_weight_curve(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Chen et al. Fig. 7: robust test loss against the radius of a random weight perturbation."""
    fig, axes = _panels(1, 5.0)
    ax = axes[0]
    for name, r in results.items():
        mean, std = np.array(r["robust_loss_mean"]), np.array(r["robust_loss_std"])
        ax.plot(r["radii"], mean, "o-", label=name)
        ax.fill_between(r["radii"], mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="radius r / ‖w‖", ylabel="robust test loss", title="weight-space robustness")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_input_surfaces(results: dict[str, dict[str, Any]], path: Path, epsilon: float) -> Path:
    """Chen et al. Fig. 6: loss surface around each input, rows = checkpoints, columns = examples."""
    rows, cols = len(results), len(next(iter(results.values()))["loss"])
    fig = plt.figure(figsize=(3.2 * cols, 3.0 * rows))
    top = max(float(np.max(r["loss"])) for r in results.values())
    for i, (name, r) in enumerate(results.items()):
        steps = np.array(r["steps"]) / epsilon
        a, b = np.meshgrid(steps, steps, indexing="ij")
        for j, z in enumerate(r["loss"]):
            ax = fig.add_subplot(rows, cols, i * cols + j + 1, projection="3d")
            ax.plot_surface(a, b, np.array(z), cmap="coolwarm", vmin=0, vmax=top, linewidth=0)
            ax.set_zlim(0, top)
            ax.set_title(f"{name} · example {j}", fontsize=8)
            ax.set_xlabel("a / ε (gradient sign)", fontsize=6)
            ax.set_ylabel("b / ε (random)", fontsize=6)
            ax.tick_params(labelsize=5)
    return save_figure(fig, path)


def plot_linearity(results: dict[str, dict[str, Any]], path: Path) -> Path:
    fig, axes = _panels(1, 5.0)
    ax = axes[0]
    names = list(results)
    ax.plot(range(len(names)), [results[n]["local_linearity"] for n in names], "o-")
    ax.set_xticks(range(len(names)), [f"{n}\n(ep {results[n]['epoch']})" for n in names], fontsize=7)
    ax.set(xlabel="checkpoint", ylabel="E cos(∇L(x), ∇L(x+η))", title="local linearity", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_tsne(results: dict[str, dict[str, Any]], classes: list[str], path: Path) -> Path:
    fig, axes = _panels(len(results), 4.6, 4.2)
    for ax, (name, r) in zip(axes, results.items()):
        labels = np.array(r["labels"])
        for kind, marker in (("clean", "o"), ("adversarial", "x")):
            xy = np.array(r[kind])
            for c in np.unique(labels):
                pick = labels == c
                ax.scatter(xy[pick, 0], xy[pick, 1], s=8, marker=marker, color=f"C{c % 10}",
                           label=f"{classes[c]} ({kind})", alpha=0.7, linewidths=0.8)
        ax.set(title=f"{name}: logits (o clean, x adversarial)", xticks=[], yticks=[], xlabel="t-SNE 1",
               ylabel="t-SNE 2")
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def plot_gradcam(images: torch.Tensor, columns: list[tuple[str, torch.Tensor, torch.Tensor, list[str]]],
                 labels: list[str], path: Path) -> Path:
    """Rows = examples; columns = the clean image, then each model's adversarial image overlaid with its
    Grad-CAM map for the true class (right/wrong under attack in the corner). Every map shares one colour
    scale, so their strengths compare across models and examples."""
    rows = len(images)
    vmax = max(max(float(cams.max()) for _, _, cams, _ in columns), 1e-12)
    fig, axes = plt.subplots(rows, 1 + len(columns), figsize=(1.9 * (1 + len(columns)) + 1.0, 1.9 * rows + 0.4),
                             squeeze=False, layout="constrained")
    shown = None
    for i in range(rows):
        _show(axes[i, 0], images[i])
        axes[i, 0].set_title(f"clean: {labels[i]}", fontsize=8)
        for j, (name, adversarial, cams, marks) in enumerate(columns, start=1):
            _show(axes[i, j], adversarial[i])
            shown = axes[i, j].imshow(cams[i].numpy(), cmap="inferno", alpha=0.5, vmin=0, vmax=vmax)
            axes[i, j].text(0.03, 0.04, marks[i], transform=axes[i, j].transAxes, fontsize=8,
                            color="white", bbox={"facecolor": "green" if marks[i] == "right" else "red",
                                                 "alpha": 0.8, "pad": 1.5, "linewidth": 0})
            if i == 0:
                axes[i, j].set_title(f"{name}\nadversarial", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[:, -1].tolist(), fraction=0.08, shrink=min(1.0, 4 / rows), pad=0.03,
                 label="Grad-CAM, true class (one scale)")
    return save_figure(fig, path, tight=False)


def _show(ax, image: torch.Tensor) -> None:
    array = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    if array.shape[-1] == 1:
        ax.imshow(array[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(array)
