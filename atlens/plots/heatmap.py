"""Class-by-class heat maps with fixed colour ranges per figure family (so checkpoints compare)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import torch

from atlens.plots.figure import plt, save_figure

# colour ranges as the CAS paper draws its matrices: [0, 1] for adversarial matrices, [0, 0.5] for
# standard training, [−0.75, 0.75] for 100+
# classes; differences of two matrices share one symmetric range.
RANGES = {"adversarial": (0.0, 1.0), "clean": (0.0, 0.5), "many_classes": (-0.75, 0.75), "difference": (-0.5, 0.5)}


def matrix_family(clean: bool, num_classes: int) -> str:
    if num_classes >= 100:
        return "many_classes"
    return "clean" if clean else "adversarial"


LABELS = {"difference": "difference of cosine similarities", "adversarial": "cosine similarity",
          "clean": "cosine similarity", "many_classes": "cosine similarity"}


def plot_matrix(matrix: torch.Tensor, classes: list[str], path: Path, title: str, family: str) -> None:
    """The matrix in its family's fixed colour range, class names on both axes, values in the cells
    (up to 12 classes) in black or white by the cell's brightness; values below the range (negative
    cosines on a [0, 1] scale) are drawn in grey rather than passing for 0."""
    vmin, vmax = RANGES[family]
    k = len(classes)
    size = min(4.5 + 0.5 * k, 14)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    cmap = matplotlib.colormaps["RdBu_r" if vmin < 0 else "viridis"].with_extremes(under="0.75", over="black")
    norm = matplotlib.colors.Normalize(vmin, vmax)
    image = ax.imshow(matrix.numpy(), norm=norm, cmap=cmap)
    step = 1 if k <= 20 else max(1, k // 20)
    ticks = list(range(0, k, step))
    ax.set_xticks(ticks, [classes[i] for i in ticks], rotation=60, ha="right", fontsize=9)
    ax.set_yticks(ticks, [classes[i] for i in ticks], fontsize=9)
    ax.set_xlabel("class j")
    ax.set_ylabel("class i")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                value = matrix[i, j].item()
                r, g, b, _ = cmap(norm(value))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8 if k <= 10 else 7,
                        color="white" if dark else "black")
    below, above = bool(matrix.min() < vmin), bool(matrix.max() > vmax)
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, extend=extend)
    bar.set_label(LABELS[family] + (f" (grey: < {vmin:g})" if below else ""))
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
