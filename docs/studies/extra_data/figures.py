"""The extra-data study's figures, from the committed runs:

- arms.png: test PGD-10 robust accuracy, clean accuracy and CAS over the epochs, per arm (mean over its seeds,
  each seed faint);
- sampler.png: the class probabilities the cross-class sampler drew the extra examples with, per epoch and seed,
  beside the pseudo-labels' class shares (what the uniform sampler draws with).

    python docs/studies/extra_data/figures.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import yaml
from matplotlib import colormaps
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
STUDIES = HERE.parent
ARMS = {  # arm -> its runs, one per seed (the baselines on the 1,000 alone come from other studies)
    "PGD-AT": [STUDIES / "precision" / "fp32-s0", STUDIES / "precision" / "fp32-s1"],
    "TRADES": [STUDIES / "early_warning" / "runs" / "trades_eps8_seed0", HERE / "trades-s1"],
    "+ 2,000 true labels": [HERE / "true-s0", HERE / "true-s1"],
    "+ 2,000 pseudo-labels": [HERE / "pseudo-s0", HERE / "pseudo-s1"],
    "+ 2,000 pseudo-labels, cross-class sampler": [HERE / "crossclass-s0", HERE / "crossclass-s1"],
    "PGD-AT, the extra-data arms' steps": [HERE / "pgd_at_steps-s0", HERE / "pgd_at_steps-s1"],
}


def evaluated(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("test_robust_acc") is not None]


def arms_figure() -> Path:
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    panels = fig.subplots(1, 3)
    series = (("test_robust_acc", 100, "test robust accuracy, PGD-10 (%)"),
              ("test_clean_acc", 100, "test clean accuracy (%)"), ("cas", 1, "CAS (PGD-10 examples)"))
    colours = colormaps["tab10"]
    for i, (arm, runs) in enumerate(ARMS.items()):
        runs = [r for r in runs if (r / "summary.json").is_file()]
        if not runs:
            continue
        curves = [evaluated(r) for r in runs]
        epochs = [r["epoch"] for r in curves[0]]
        for ax, (key, scale, label) in zip(panels, series):
            if any(r.get(key) is None for rows in curves for r in rows):
                continue  # a run that did not track it
            for rows in curves:
                ax.plot([r["epoch"] for r in rows], [scale * r[key] for r in rows], color=colours(i), alpha=0.25,
                        lw=0.8)
            mean = [scale * statistics.mean(rows[j][key] for rows in curves) for j in range(len(epochs))]
            ax.plot(epochs, mean, color=colours(i), lw=1.8, label=f"{arm} (n = {len(runs)})")
            ax.set(xlabel="epoch", ylabel=label)
    for ax, title in zip(panels, ("Robust accuracy (1,000 test images)", "Clean accuracy", "Cross-class attribution")):
        ax.set_title(title)
        ax.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    fig.savefig(HERE / "arms.png", dpi=110)
    return HERE / "arms.png"


def sampler_figure() -> Path:
    runs = [r for r in ARMS["+ 2,000 pseudo-labels, cross-class sampler"] if (r / "summary.json").is_file()]
    fig = Figure(figsize=(6 * len(runs), 4), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, run in zip(axes, runs):
        classes = json.loads((run / "data.json").read_text())["classes"]
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        drawn = [r for r in rows if "extra_class_probabilities" in r]
        counts = json.loads((run / "extra-labels.json").read_text())["class_counts"]
        uniform = [c / sum(counts) for c in counts]
        ratios = [[100 * r["extra_class_probabilities"][c] / uniform[c] if uniform[c] else float("nan")
                   for r in drawn] for c in range(len(classes))]  # a class the teacher never predicts: not drawn
        image = ax.imshow(ratios, aspect="auto", cmap="RdBu_r", vmin=0, vmax=200,
                          extent=(drawn[0]["epoch"] + 0.5, drawn[-1]["epoch"] + 1.5, len(classes) - 0.5, -0.5))
        # a row logs the probabilities its epoch set, which the following epochs draw with
        ax.set_yticks(range(len(classes)), classes)
        seed = yaml.safe_load((run / "config.yaml").read_text()).get("seed", 0)
        ax.set(xlabel="epoch that draws with them",
               title=f"cross-class sampler, seed {seed}: each class's probability\n"
                     "as a share of the uniform sampler's (%)")
        fig.colorbar(image, ax=ax, label="% of the uniform sampler's probability")
    fig.savefig(HERE / "sampler.png", dpi=110)
    return HERE / "sampler.png"


if __name__ == "__main__":
    print(arms_figure())
    print(sampler_figure())
