"""The numbers of each network analysed as an atlens run and as an outside model (--model), side by side;
writes summary.json and summary.md here and exits 1 if any pair differs.

    python docs/studies/outside_models/compare.py RUNS_FOLDER
"""

import json
import sys
from pathlib import Path

runs = Path(sys.argv[1])
here = Path(__file__).resolve().parent
rows, differ = [], []
for name, spec in (("torchvision_resnet18", "torchvision-resnet18"), ("timm_resnet10t", "timm-resnet10t")):
    run = runs / name
    summary = json.loads((run / "summary.json").read_text())
    row = {"model": name, "best_epoch": summary["best_epoch"], "epochs": summary.get("epochs")}
    for checkpoint in ("best", "last"):
        as_run = json.loads((run / "analysis" / f"cas-{checkpoint}.json").read_text())
        outside = json.loads((run / f"outside-{checkpoint}" / f"cas-{spec}.json").read_text())
        eval_run = json.loads((run / f"eval-{checkpoint}.json").read_text())["attacks"]
        eval_outside = json.loads((run / f"outside-{checkpoint}" / f"eval-{spec}.json").read_text())["attacks"]
        pairs = {"cas": (as_run["cas"], outside["cas"]),
                 "cas_robust_acc": (as_run["robust_acc"], outside["robust_acc"]),
                 "clean_acc": (eval_run["clean"]["accuracy"], eval_outside["clean"]["accuracy"]),
                 "pgd20_acc": (eval_run["pgd20"]["accuracy"], eval_outside["pgd20"]["accuracy"]),
                 "matrix_max_abs_difference": (0.0, max(abs(a - b)
                                                        for ra, rb in zip(as_run["matrix"], outside["matrix"])
                                                        for a, b in zip(ra, rb)))}
        for key, (a, b) in pairs.items():
            row[f"{checkpoint}_{key}_run"], row[f"{checkpoint}_{key}_outside"] = a, b
            if a != b:
                differ.append(f"{name} {checkpoint} {key}: {a} vs {b}")
    rows.append(row)
(here / "summary.json").write_text(json.dumps({"rows": rows, "differences": differ}, indent=2) + "\n")
lines = ["| network | checkpoint (epoch) | clean % | PGD-20 % | CAS as a run | CAS through --model "
         "| largest matrix difference |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
for row in rows:
    for c in ("best", "last"):
        epoch = row["best_epoch"] if c == "best" else "final"
        lines.append(f"| {row['model']} | {c} ({epoch}) | {100 * row[f'{c}_clean_acc_run']:.1f} | "
                     f"{100 * row[f'{c}_pgd20_acc_run']:.1f} | {row[f'{c}_cas_run']:.4f} | "
                     f"{row[f'{c}_cas_outside']:.4f} | {row[f'{c}_matrix_max_abs_difference_outside']:.1e} |")
(here / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
print("differences:", differ or "none")
sys.exit(1 if differ else 0)
