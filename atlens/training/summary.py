"""The run summary: best and last accuracies, the robust-overfitting gap (best − last) and the same gap between
windows of evaluations, which the noise of picking the best of many evaluations does not inflate."""

from __future__ import annotations

from typing import Any

from atlens.progress import count


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
    summary.update(window_gap(evaluated))
    if selection.startswith("val_"):
        summary["best_val_robust_acc"] = best["val_robust_acc"]
        summary["last_val_robust_acc"] = last["val_robust_acc"]
    return summary


def window_gap(evaluated: list[dict[str, Any]], share: float = 0.1) -> dict[str, Any]:
    """Mean test robust accuracy over the evaluations of the last ``share`` of the epochs against the best mean
    over any window of as many consecutive evaluations: a gap that one lucky evaluation cannot make."""
    epochs = evaluated[-1]["epoch"]
    size = max(1, sum(r["epoch"] > epochs * (1 - share) for r in evaluated))
    accuracy = [r["test_robust_acc"] for r in evaluated]
    means = [sum(accuracy[i:i + size]) / size for i in range(len(accuracy) - size + 1)]
    start = max(range(len(means)), key=lambda i: (means[i], -i))  # the earliest among equal windows
    return {"window_evaluations": size,
            "best_window_epochs": [evaluated[start]["epoch"], evaluated[start + size - 1]["epoch"]],
            "best_window_robust_acc": means[start], "last_window_robust_acc": means[-1],
            "window_robust_gap": means[start] - means[-1]}


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
    if "window_robust_gap" in summary:
        first, last = summary["best_window_epochs"]
        lines.append(f"mean robust acc over {count(summary['window_evaluations'], 'evaluation')}: best window (epochs "
                     f"{first}-{last}) {100 * summary['best_window_robust_acc']:.2f}%, last "
                     f"{100 * summary['last_window_robust_acc']:.2f}%, gap "
                     f"{100 * summary['window_robust_gap']:.2f} points")
    if "cas_best" in summary:
        lines.append(f"{'CAS':16}{summary['cas_best']:8.2f}{summary['cas_last']:8.2f}{summary['delta_cas']:8.2f}")
    if summary.get("catastrophic_overfitting_epoch"):
        lines.append(f"catastrophic overfitting at epoch {summary['catastrophic_overfitting_epoch']} "
                     f"(test PGD accuracy collapsed while FGSM accuracy rose)")
    return "\n".join(lines)
