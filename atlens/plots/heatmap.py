"""Class-by-class heat maps with fixed colour ranges per figure family (so checkpoints compare)."""

from __future__ import annotations

from pathlib import Path

import torch

from atlens.plots.figure import plt, save_figure

# SPEC §5: [0, 1] for adversarial matrices, [0, 0.5] for standard training, [−0.75, 0.75] for 100+
# classes; differences of two matrices share one symmetric range.
RANGES = {"adversarial": (0.0, 1.0), "clean": (0.0, 0.5), "many_classes": (-0.75, 0.75), "difference": (-0.5, 0.5)}


def matrix_family(clean: bool, num_classes: int) -> str:
    if num_classes >= 100:
        return "many_classes"
    return "clean" if clean else "adversarial"


def plot_matrix(matrix: torch.Tensor, classes: list[str], path: Path, title: str, family: str) -> None:
    vmin, vmax = RANGES[family]
    k = len(classes)
    size = min(4 + 0.45 * k, 14)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    cmap = "RdBu_r" if vmin < 0 else "viridis"
    image = ax.imshow(matrix.numpy(), vmin=vmin, vmax=vmax, cmap=cmap)
    step = 1 if k <= 20 else max(1, k // 20)
    ticks = list(range(0, k, step))
    ax.set_xticks(ticks, [classes[i] for i in ticks], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, [classes[i] for i in ticks], fontsize=8)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                value = matrix[i, j].item()
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if (value - vmin) / (vmax - vmin) < 0.5 else "black")
    extend = "both" if (matrix.min() < vmin or matrix.max() > vmax) else "neither"
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, extend=extend)
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
