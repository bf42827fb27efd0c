"""``atlens eval``: accuracy of a checkpoint under a list of named attacks (``atlens.evaluation.attacks``),
and under growing budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlens.attacks import ThreatModel, threat_model
from atlens.config import load_config
from atlens.data import ImageTensors
from atlens.evaluation.accuracy import PGDAttack, evaluate, seconds_per_gradient
from atlens.evaluation.attacks import ATTACKS, DEFAULT_ATTACKS, TABLE_ORDER, Context, NamedAttack, TransferAttack
from atlens.files import write_json
from atlens.models import check_contract
from atlens.plots.figure import plt, save_figure
from atlens.precision import NAMES, amp_dtype, autocast
from atlens.runs import RunDirectory, load_model, replacing, run_test_data


def evaluate_attacks(model: nn.Module, data: ImageTensors, attacks: list[NamedAttack], batch_size: int = 256,
                     device: str | torch.device = "cpu", seed: int = 0, progress=None, precision: bool | str = False,
                     autoattack_precision: bool | str = False) -> dict[str, Any]:
    """Accuracy under each attack. ``precision`` is the autocast the attacks are crafted in (false: fp32; bf16,
    bf16-emulated), ``autoattack_precision`` AutoAttack's (fp32 unless asked); every attacked example is judged
    in fp32. Each result records both."""
    device = torch.device(device)
    results = {}
    for spec in attacks:
        dtype, note = amp_dtype(autoattack_precision if spec.name == "autoattack" else precision, device)
        wrapped = (lambda it, label=spec.name: progress(it, label)) if progress else None
        acc = evaluate(model, data, spec.attack, batch_size, device, seed, wrapped, clean=spec.attack is None,
                       crafting=lambda dtype=dtype: autocast(device.type, dtype))
        accuracy = acc.clean if spec.attack is None else acc.robust
        ran = {"attack": NAMES[dtype] if spec.attack is not None else "none", "judgement": "fp32"}
        results[spec.name] = {"accuracy": accuracy, "params": spec.params,
                              "precision": {**ran, "note": note} if note and spec.attack is not None else ran}
    return results


def budget_curve(model: nn.Module, data: ImageTensors, threat: ThreatModel, multipliers: list[float],
                 steps: int = 20, batch_size: int = 256, device: str | torch.device = "cpu", seed: int = 0,
                 progress=None) -> list[dict[str, float]]:
    """PGD accuracy as the budget grows past the training ε (robustness extrapolation)."""
    points = []
    for m in multipliers:
        eps = m * threat.epsilon
        attack = PGDAttack(ThreatModel(threat.norm, eps, threat.box), steps)
        wrapped = (lambda it, label=f"ε={eps:.4g}": progress(it, label)) if progress else None
        acc = evaluate(model, data, attack, batch_size, device, seed, wrapped, clean=False)
        points.append({"epsilon": eps, "accuracy": acc.robust})
    return points


def plot_budget_curve(points: list[dict[str, float]], train_eps: float, norm: str, path: Path, title: str) -> None:
    scale = 255 if norm == "linf" else 1
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot([p["epsilon"] * scale for p in points], [100 * p["accuracy"] for p in points], "o-")
    ax.axvline(train_eps * scale, color="gray", ls=":", label="training ε")
    ax.set(xlabel="ε" + (" (/255)" if scale == 255 else ""), ylabel="PGD-20 accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def format_table(results: dict[str, Any]) -> str:
    """The second paper's Table 2 row (Natural / FGSM / PGD-20 / PGD-100 / CW∞ / AA), then the rest."""
    keys = [key for key in TABLE_ORDER if key in results] + [key for key in results if key not in TABLE_ORDER]
    header = "".join(f"{ATTACKS.heading(key):>12}" for key in keys)
    row = "".join(f"{100 * results[key]['accuracy']:12.2f}" for key in keys)
    return header + "\n" + row


def estimate_seconds(model: nn.Module, data: ImageTensors, names: list[str], curve: bool,
                     device: str | torch.device = "cpu") -> float:
    """Seconds the named attacks (and the budget curve: six PGD-20 runs) will take on ``data``."""
    steps = sum(ATTACKS.cost(n) for n in names) + (6 * 20 if curve else 0)
    return steps * seconds_per_gradient(model, data, device) * len(data)


def evaluate_model(model: nn.Module, data: ImageTensors, threat: ThreatModel, out: Path, label: str,
                   attack_names: list[str] | None = None, num_classes: int | None = None, seed: int = 0,
                   device: str | torch.device = "cpu", curve: bool = True, progress=None,
                   record: dict[str, Any] | None = None, precision: bool | str = False,
                   autoattack_precision: bool | str = False, overwrite: bool = False) -> dict[str, Any]:
    """Accuracy of ``model`` under the named attacks; writes ``out/eval-<label>.json`` (with ``record``, e.g.
    where the model and the data come from) and the budget-curve figure. An earlier result of that name is
    replaced only with ``overwrite`` (``atlens.runs.results``)."""
    with replacing(out, [f"eval-{label}.json", f"eval-{label}-budget.png"], overwrite):
        return _evaluate_model(model, data, threat, Path(out), label, attack_names, num_classes, seed, device, curve,
                               progress, record, precision, autoattack_precision)


def _evaluate_model(model: nn.Module, data: ImageTensors, threat: ThreatModel, out: Path, label: str,
                    attack_names: list[str] | None, num_classes: int | None, seed: int, device: str | torch.device,
                    curve: bool, progress, record: dict[str, Any] | None, precision: bool | str,
                    autoattack_precision: bool | str) -> dict[str, Any]:
    names = attack_names or DEFAULT_ATTACKS.split(",")
    classes = num_classes if num_classes is not None else check_contract(model).out_features
    specs = [ATTACKS.build(n, Context(model, threat, classes, seed, device)) for n in names]
    results = evaluate_attacks(model, data, specs, device=device, seed=seed, progress=progress, precision=precision,
                               autoattack_precision=autoattack_precision)
    report: dict[str, Any] = {**(record or {}), "checkpoint": label, "examples": len(data), "seed": seed,
                              "threat": {"norm": threat.norm, "epsilon": threat.epsilon}, "attacks": results}
    if curve:
        points = budget_curve(model, data, threat, [0, 0.25, 0.5, 0.75, 1, 1.5, 2], device=device, seed=seed,
                              progress=progress)
        report["budget_curve"] = points
        plot_budget_curve(points, threat.epsilon, threat.norm, Path(out) / f"eval-{label}-budget.png",
                          f"{label}: accuracy vs budget (n={len(data)})")
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / f"eval-{label}.json", report)
    return report


def evaluate_run(run_path: str | Path, checkpoint: str = "best", attack_names: list[str] | None = None,
                 examples: int | None = None, norm: str | None = None, epsilon: float | None = None,
                 device: str = "cpu", curve: bool = True, both_directions: bool = False,
                 progress=None, announce=None, precision: bool | str = False,
                 autoattack_precision: bool | str = False, overwrite: bool = False) -> dict[str, Any]:
    """Evaluate a run's checkpoint; writes RUN/eval-<checkpoint>.json and the budget-curve figure.
    ``announce(seconds)`` hears the time estimate before the attacks start."""
    run = RunDirectory(run_path)
    cfg = load_config(run.config)
    data, info, indices = run_test_data(cfg, examples)
    threat = threat_model(norm, epsilon, info.bounds, cfg.attack)
    model = load_model(run.path, checkpoint, device, data=info)
    names = attack_names or DEFAULT_ATTACKS.split(",")
    if announce:
        announce(estimate_seconds(model, data, names, curve, device))
    label = run.checkpoint_label(checkpoint)
    report = evaluate_model(model, data, threat, run.path, label, names, info.num_classes, cfg.seed, device, curve,
                            progress, {"run": str(run.path), "example_indices": indices}, precision,
                            autoattack_precision, overwrite)
    if both_directions:
        for name in names:
            if name.startswith("transfer:"):
                spec = ATTACKS.build(name, Context(model, threat, info.num_classes, cfg.seed, device))
                reverse = TransferAttack(model, spec.attack.pgd)
                acc = evaluate(spec.attack.source, data, reverse, device=device, seed=cfg.seed, clean=False)
                report["attacks"][f"transfer-to:{spec.params['source']}"] = {
                    "accuracy": acc.robust, "params": {**spec.params, "direction": "this run -> source"}}
        write_json(run.path / f"eval-{label}.json", report)
    return report
