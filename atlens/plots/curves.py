"""Training curves in the style of the papers' Figure 1: robust and clean accuracy per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atlens.plots.figure import plt, save_figure

YLABELS = {"cas": "CAS (Σ positive off-diagonal cosines)"}


def lr_decays(rows: list[dict[str, Any]]) -> list[int]:
    """The epochs whose learning rate is lower than the previous epoch's (the schedule's decays)."""
    return [b["epoch"] for a, b in zip(rows, rows[1:]) if a.get("lr") and b.get("lr") and b["lr"] < 0.999 * a["lr"]]


def mark_schedule(ax: Any, rows: list[dict[str, Any]], best_epoch: int | None) -> None:
    for i, epoch in enumerate(lr_decays(rows)):
        ax.axvline(epoch - 0.5, color="0.6", lw=0.8, ls=":", label="lr decay" if i == 0 else None)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="C3", lw=0.9, ls="--", label=f"best (epoch {best_epoch})")


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str = "", selection: str | None = None,
                classes: list[str] | None = None) -> None:
    """Robust and clean accuracy, training loss (and CAS when tracked, and the extra-data sampler's class
    probabilities when logged, labelled by ``classes``) per epoch, with the learning-rate decays and the best
    epoch by ``selection`` (e.g. test_robust_acc) marked on every panel."""
    chosen = [r for r in rows if selection and r.get(selection) is not None]
    best_epoch = max(chosen, key=lambda r: (r[selection], -r["epoch"]))["epoch"] if chosen else None
    extra = [k for k in ("cas",) if any(r.get(k) is not None for r in rows)]
    sampled = any(r.get("extra_class_probabilities") for r in rows)
    panels = 3 + len(extra) + sampled
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
        ax.set_ylabel(f"{name} (%)")
        ax.grid(alpha=0.3)
        mark_schedule(ax, rows, best_epoch)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    xs, ys = _series(rows, "train_loss")
    axes[2].plot(xs, ys, color="C3")
    axes[2].set_title("training loss")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("mean training loss")
    axes[2].grid(alpha=0.3)
    mark_schedule(axes[2], rows, best_epoch)
    for ax, key in zip(axes[3:], extra):
        xs, ys = _series(rows, key)
        ax.plot(xs, ys, "o-", color="C4", markersize=3)
        ax.set_title(key.upper())
        ax.set_xlabel("epoch")
        ax.set_ylabel(YLABELS.get(key, key))
        mark_schedule(ax, rows, best_epoch)
        ax.grid(alpha=0.3)
    if sampled:
        plot_class_probabilities(axes[-1], rows, classes)
        mark_schedule(axes[-1], rows, best_epoch)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_class_probabilities(ax: Any, rows: list[dict[str, Any]], classes: list[str] | None = None) -> None:
    """The extra-data sampler's probability of drawing each class per epoch, one line per class; the dotted
    line is the uniform share."""
    xs, ys = _series(rows, "extra_class_probabilities")
    count = len(ys[0])
    names = classes if classes and len(classes) == count else [f"class {c}" for c in range(count)]
    for c, name in enumerate(names):
        ax.plot(xs, [100 * y[c] for y in ys], color=f"C{c % 10}", lw=1, label=name)
    ax.axhline(100 / count, color="0.4", lw=0.8, ls=":")
    ax.set(title="extra data drawn per class", xlabel="epoch", ylabel="probability of the class (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)


def plot_runs_compared(runs: dict[str, list[dict[str, Any]]],
                       groups: dict[str, list[str]] | None = None) -> plt.Figure:
    """Test robust and clean accuracy (and CAS when tracked) per epoch. Without ``groups``, one line per run; with
    them (a label -> the names of its runs in ``runs``), one colour per group: its runs thin, their mean bold and,
    with two runs or more, mean ± sd shaded over the epochs every run of the group evaluated."""
    panels = [("test_robust_acc", "test robust accuracy (%)", 100), ("test_clean_acc", "test clean accuracy (%)", 100)]
    if any(r.get("cas") is not None for rows in runs.values() for r in rows):
        panels.append(("cas", YLABELS["cas"], 1))
    groups = groups or {name: [name] for name in runs}
    # many entries or long labels: one legend for the figure, below the panels, instead of one in each
    below = len(groups) > 4 or any(len(label) > 40 for label in groups)
    legend_height = 0.2 * len(groups) + 0.4 if below else 0.0
    fig = plt.figure(figsize=(5.2 * len(panels), 3.6 + legend_height))
    mosaic = [[str(i) for i in range(len(panels))]] + ([["legend"] * len(panels)] if below else [])
    cells = fig.subplot_mosaic(mosaic, height_ratios=[3.6, legend_height] if below else None)
    axes = [cells[str(i)] for i in range(len(panels))]
    grouped = any(len(names) > 1 for names in groups.values())
    note = "bold: mean, band: ± sd, thin: runs" if grouped else None
    for ax, (key, title, scale) in zip(axes, panels):
        for i, (label, names) in enumerate(groups.items()):
            color = f"C{i % 10}"
            series = [_series(runs[name], key) for name in names]
            series = [(xs, [scale * y for y in ys]) for xs, ys in series if xs]
            if not series:
                continue
            if len(series) == 1:
                ax.plot(*series[0], color=color, label=label)
                continue
            for xs, ys in series:
                ax.plot(xs, ys, color=color, lw=0.6, alpha=0.35)
            common = sorted(set.intersection(*(set(xs) for xs, _ in series)))
            values = np.array([[dict(zip(xs, ys))[x] for x in common] for xs, ys in series])
            mean, sd = values.mean(0), values.std(0, ddof=1)
            ax.plot(common, mean, color=color, lw=1.8, label=f"{label} (mean of {len(series)})")
            ax.fill_between(common, mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
        ax.set(title=title, xlabel="epoch", ylabel=title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0] and not below:
            ax.legend(fontsize=7, title=note, title_fontsize=7)
    if below:
        cells["legend"].axis("off")
        cells["legend"].legend(*axes[0].get_legend_handles_labels(), loc="upper left", fontsize=7, title=note,
                               title_fontsize=7, frameon=False)
    return fig
