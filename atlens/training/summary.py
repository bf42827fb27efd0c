"""The run summary: best and last accuracies and the robust-overfitting gap (best − last)."""

from __future__ import annotations

from typing import Any


def summarize(rows: list[dict[str, Any]], selection: str) -> dict[str, Any]:
    evaluated = [r for r in rows if r.get(selection) is not None]
    if not evaluated:
        return {"epochs": len(rows), "selection": selection}
    best = max(evaluated, key=lambda r: (r[selection], -r["epoch"]))  # earliest epoch among ties
    last = evaluated[-1]
    summary: dict[str, Any] = {
        "epochs": len(rows),
        "selection": selection,
        "best_epoch": best["epoch"],
        "last_epoch": last["epoch"],
        "best_robust_acc": best["test_robust_acc"],
        "last_robust_acc": last["test_robust_acc"],
        "robust_gap": best["test_robust_acc"] - last["test_robust_acc"],
        "best_clean_acc": best["test_clean_acc"],
        "last_clean_acc": last["test_clean_acc"],
        "clean_gap": best["test_clean_acc"] - last["test_clean_acc"],
        "peak_test_robust_acc": max(r["test_robust_acc"] for r in evaluated),
        "final_train_robust_acc": rows[-1]["train_robust_acc"],
        "total_seconds": round(sum(r.get("seconds", 0) for r in rows), 1),
    }
    if selection.startswith("val_"):
        summary["best_val_robust_acc"] = best["val_robust_acc"]
        summary["last_val_robust_acc"] = last["val_robust_acc"]
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    if "best_epoch" not in summary:
        return "no evaluated epoch yet"
    selected_by = summary["selection"].replace("_", " ")
    lines = [
        f"best checkpoint: epoch {summary['best_epoch']} (selected by {selected_by})",
        f"{'':16}{'Best':>8}{'Final':>8}{'Diff':>8}",
        f"{'robust acc (%)':16}{100 * summary['best_robust_acc']:8.2f}{100 * summary['last_robust_acc']:8.2f}"
        f"{100 * summary['robust_gap']:8.2f}",
        f"{'clean acc (%)':16}{100 * summary['best_clean_acc']:8.2f}{100 * summary['last_clean_acc']:8.2f}"
        f"{100 * summary['clean_gap']:8.2f}",
        f"final training robust acc: {100 * summary['final_train_robust_acc']:.2f}%  "
        f"({summary['total_seconds']:.0f} s)",
    ]
    if "cas_best" in summary:
        lines.append(f"{'CAS':16}{summary['cas_best']:8.2f}{summary['cas_last']:8.2f}{summary['delta_cas']:8.2f}")
    if summary.get("catastrophic_overfitting_epoch"):
        lines.append(f"catastrophic overfitting at epoch {summary['catastrophic_overfitting_epoch']} "
                     f"(test PGD accuracy collapsed while FGSM accuracy rose)")
    return "\n".join(lines)
