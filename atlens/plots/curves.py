"""Training curves in the style of the papers' Figure 1: robust and clean accuracy per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atlens.plots.figure import plt, save_figure


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    extra = [k for k in ("cas",) if any(r.get(k) is not None for r in rows)]
    panels = 3 + len(extra)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6))
    robust = [("train_robust_acc", "train", "C0", "-"), ("test_robust_acc", "test", "C1", "-"),
              ("val_robust_acc", "validation", "C2", "--")]
    clean = [("train_clean_acc", "train", "C0", "-"), ("test_clean_acc", "test", "C1", "-"),
             ("val_clean_acc", "validation", "C2", "--")]
    for ax, series, name in ((axes[0], robust, "robust accuracy"), (axes[1], clean, "clean accuracy")):
        for key, label, color, style in series:
            xs, ys = _series(rows, key)
            if xs:
                marker = "." if len(xs) < 30 else None
                ax.plot(xs, [100 * y for y in ys], style, color=color, label=label, marker=marker)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    xs, ys = _series(rows, "train_loss")
    axes[2].plot(xs, ys, color="C3")
    axes[2].set_title("training loss")
    axes[2].set_xlabel("epoch")
    axes[2].grid(alpha=0.3)
    for ax, key in zip(axes[3:], extra):
        xs, ys = _series(rows, key)
        ax.plot(xs, ys, "o-", color="C4", markersize=3)
        ax.set_title(key.upper())
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_runs_compared(runs: dict[str, list[dict[str, Any]]]) -> plt.Figure:
    """Test robust and clean accuracy (and CAS when tracked) per epoch, one line per run."""
    panels = [("test_robust_acc", "test robust accuracy (%)", 100), ("test_clean_acc", "test clean accuracy (%)", 100)]
    if any(r.get("cas") is not None for rows in runs.values() for r in rows):
        panels.append(("cas", "CAS", 1))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6))
    for ax, (key, title, scale) in zip(axes, panels):
        for i, (name, rows) in enumerate(runs.items()):
            xs, ys = _series(rows, key)
            if xs:
                ax.plot(xs, [scale * y for y in ys], color=f"C{i % 10}", label=name)
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig
