"""The outside-models study's figure: test PGD-10 robust accuracy and CAS over epochs for the two outside
architectures and, for reference, the CPU protocol's PreActResNet-18 (first 30 of its 100 epochs).

    python docs/studies/outside_models/figure.py
"""

import json
from pathlib import Path

from matplotlib.figure import Figure

here = Path(__file__).resolve().parent
runs = {"torchvision ResNet-18 (30 ep)": here / "torchvision_resnet18" / "metrics.jsonl",
        "timm ResNet-10-T (30 ep)": here / "timm_resnet10t" / "metrics.jsonl",
        "PreActResNet-18 w16 (first 30 of 100 ep)": here.parent / "cpu_pgd_at_seed_streams" / "metrics.jsonl"}
fig = Figure(figsize=(10, 3.8), layout="constrained")
accuracy, cas = fig.subplots(1, 2)
for label, path in runs.items():
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["epoch"] <= 30 and r.get("test_robust_acc") is not None]
    epochs = [r["epoch"] for r in rows]
    accuracy.plot(epochs, [100 * r["test_robust_acc"] for r in rows], "o-", ms=3, label=label)
    cas.plot(epochs, [r["cas"] for r in rows], "o-", ms=3, label=label)
accuracy.set(xlabel="epoch", ylabel="test robust accuracy, PGD-10 (%)", title="Robust accuracy (1,000 test images)")
cas.set(xlabel="epoch", ylabel="CAS (PGD-10 examples)", title="Cross-class attribution score")
for ax in (accuracy, cas):
    ax.grid(alpha=0.3)
cas.legend(fontsize=8)
fig.savefig(here / "outside_models.png", dpi=110)
print(here / "outside_models.png")
