"""CAS of a model or a run's checkpoints: JSON and heat maps under ``RUN/analysis/``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlens.analysis.attribution import AttributionAccumulator, cas_score, instance_matrix
from atlens.attacks import threat_model
from atlens.config import load_config
from atlens.data import ImageTensors
from atlens.evaluation import PGDAttack, evaluate, seconds_per_gradient
from atlens.files import write_json
from atlens.plots.figure import format_epsilon
from atlens.plots.heatmap import matrix_family, plot_matrix
from atlens.runs import RunDirectory, distinct_checkpoints, load_model_and_epoch, replacing, run_test_data


@dataclass
class CASResult:
    cas: float
    matrix: list[list[float]]
    classes: list[str]
    epsilon: float | None
    attack: dict[str, Any] | None
    examples: int
    robust_acc: float | None
    clean_acc: float | None
    icas: float | None = None
    instance_matrix: list[list[float]] | None = None
    example_indices: list[int] | None = None  # which test examples (None: all of them)
    source: dict[str, Any] | None = None  # the model's description, for a model from outside atlens

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()
                if v is not None or k in ("epsilon", "attack", "robust_acc", "clean_acc")}


def compute_cas(model: nn.Module, data: ImageTensors, classes: list[str], attack: PGDAttack | None,
                batch_size: int = 256, device: torch.device | str = "cpu", instance: bool = False,
                seed: int = 0, progress=None,
                total: Callable[[torch.Tensor], torch.Tensor] | None = None) -> CASResult:
    """The attribution matrix and CAS on ``data``, attacked by ``attack`` (clean inputs if None).
    The attack runs batched over all classes; the accuracy on the attributed inputs comes for free
    (no clean pass is made under attack, to keep the bookkeeping at one extra forward). With ``total`` (a sum over
    data-parallel ranks, in place), ``data`` is this rank's shard and the result is that of the whole set."""
    if total is not None and instance:
        raise ValueError("the instance-wise matrix needs every example in one process; compute it without total")
    accumulator = AttributionAccumulator(model, len(classes), keep_instances=instance)
    acc = evaluate(model, data, attack, batch_size, device, seed, progress, observers=[accumulator], clean=False)
    correct, examples = acc.clean if attack is None else acc.robust, acc.examples
    if total is not None:
        accumulator.reduce(total)
        device = accumulator.sums.device
        counts = total(torch.tensor([correct * examples, examples], dtype=torch.float64, device=device))
        correct, examples = (counts[0] / counts[1]).item(), int(counts[1].item())
    matrix = accumulator.matrix().cpu()
    result = CASResult(cas_score(matrix), matrix.tolist(), classes,
                       attack.threat.epsilon if attack else None, attack.describe() if attack else None,
                       examples, None if attack is None else correct, correct if attack is None else None)
    if instance:
        vectors, labels = accumulator.instances()
        imatrix = instance_matrix(vectors, labels, len(classes))
        result.icas, result.instance_matrix = cas_score(imatrix), imatrix.tolist()
    return result


def write_cas(result: CASResult, analysis_dir: Path, name: str) -> Path:
    analysis_dir.mkdir(parents=True, exist_ok=True)
    path = analysis_dir / f"cas-{name}.json"
    write_json(path, result.to_json())
    plot_cas(result, analysis_dir / f"cas-{name}.png", name)
    return path


def plot_cas(result: CASResult, path: Path, name: str) -> Path:
    """The heat map of the matrix (and ``icas-…`` beside it for the instance-wise one), titled with ``name``."""
    clean = result.attack is None
    family = matrix_family(clean, len(result.classes))
    what = "clean" if clean else f"{result.attack['name']}, ε = {format_epsilon(result.epsilon)}"
    plot_matrix(torch.tensor(result.matrix), result.classes, path,
                f"{name}: CAS = {result.cas:.2f} ({what}, n={result.examples})", family)
    if result.instance_matrix is not None:
        plot_matrix(torch.tensor(result.instance_matrix), result.classes,
                    path.with_name("icas-" + path.name.removeprefix("cas-")),
                    f"{name}: I-CAS = {result.icas:.2f} ({what}, n={result.examples})", family)
    return path


def write_comparison(a: CASResult, b: CASResult, names: tuple[str, str], analysis_dir: Path) -> dict[str, Any]:
    """ΔCAS = CAS(a) − CAS(b) and the map of C_a − C_b."""
    diff = torch.tensor(a.matrix) - torch.tensor(b.matrix)
    summary = {"a": names[0], "b": names[1], "cas_a": a.cas, "cas_b": b.cas, "delta_cas": a.cas - b.cas,
               "difference": diff.tolist(), "classes": a.classes}
    stem = f"cas-{names[0]}-minus-{names[1]}"
    write_json(analysis_dir / f"{stem}.json", summary)
    plot_matrix(diff, a.classes, analysis_dir / f"{stem}.png",
                f"C[{names[0]}] − C[{names[1]}]: ΔCAS = {a.cas - b.cas:+.2f}", "difference")
    return summary


def cas_for_models(models: dict[str, nn.Module], data: ImageTensors, classes: list[str], attack: PGDAttack | None,
                   out: Path, instance: bool = False, seed: int = 0, device: str | torch.device = "cpu",
                   progress=None, record: dict[str, Any] | None = None,
                   indices: list[int] | None = None, announce: Callable[[float], None] | None = None,
                   overwrite: bool = False, suffix: str | None = None) -> dict[str, CASResult]:
    """CAS of each model on ``data``, written to ``out/cas-<name><suffix>.json`` and heat maps (``record``, e.g.
    where the model comes from, is kept in the JSON); a difference map for two. ``suffix`` defaults to ``-clean``
    for clean inputs, nothing otherwise. ``announce(seconds)`` hears the time estimate before the first attack.
    Earlier results of the same names are replaced only with ``overwrite`` (``atlens.runs.results``)."""
    suffix = ("-clean" if attack is None else "") if suffix is None else suffix
    files = [f"cas-{name}{suffix}.json" for name in models]
    if len(models) == 2:
        files.append(f"cas-{'-minus-'.join(name + suffix for name in models)}.json")
    with replacing(out, files, overwrite):
        if announce and models:
            announce(estimate_cas_seconds(next(iter(models.values())), data, attack, device) * len(models))
        results = {}
        for name, model in models.items():
            result = compute_cas(model, data, classes, attack, device=device, instance=instance, seed=seed,
                                 progress=progress)
            result.example_indices = indices
            result.source = record
            results[name] = result
            write_cas(result, out, name + suffix)
        if len(results) == 2:
            (na, a), (nb, b) = results.items()
            write_comparison(a, b, (na + suffix, nb + suffix), out)
    return results


def estimate_cas_seconds(model: nn.Module, data: ImageTensors, attack: PGDAttack | None,
                         device: str | torch.device = "cpu") -> float:
    """Seconds one model's CAS takes on ``data``: the attack's gradient steps and the attribution's own pass."""
    gradients = (attack.steps if attack else 0) + 2
    return gradients * seconds_per_gradient(model, data, device) * len(data)


def study_name(attack: PGDAttack | None, training: tuple[str, float], examples: int | None) -> str:
    """What a CAS result of a run's checkpoint is named by, beside training's own ``cas-best``/``cas-last``: the
    attack (``pgd20``, ``clean``), a budget other than training's (``-linf-eps4_255``), a subset (``-n200``)."""
    if attack is None:
        name = "clean"
    else:
        name = attack.describe()["name"]
        if (attack.threat.norm, attack.threat.epsilon) != training:
            name += f"-{attack.threat.norm}-eps{format_epsilon(attack.threat.epsilon).replace('/', '_')}"
    return name + (f"-n{examples}" if examples is not None else "")


def cas_for_run(run_path: str | Path, checkpoints: list[str], clean: bool = False, instance: bool = False,
                examples: int | None = None, device: str = "cpu", progress=None,
                note: Callable[[str], None] | None = None, announce: Callable[[float], None] | None = None,
                overwrite: bool = False, norm: str | None = None, epsilon: float | None = None
                ) -> dict[str, CASResult]:
    """CAS of each named checkpoint of a run, written to RUN/analysis/ as ``cas-<checkpoint>-<study>`` (the study:
    ``study_name``; never in place of the matrices training wrote); a difference map for two (``last`` is left
    out when it is the same checkpoint as ``best``). ``norm`` and ``epsilon`` default to the training threat
    model; another budget is a study of its own and is named by it."""
    run = RunDirectory(run_path)
    cfg = load_config(run.config)
    data, info, indices = run_test_data(cfg, examples)
    models = {run.checkpoint_label(name): load_model_and_epoch(run.path, name, device, info)
              for name in checkpoints}
    models = {name: model for name, (model, _) in distinct_checkpoints(models, note).items()}
    attack = None if clean else PGDAttack(threat_model(norm, epsilon, info.bounds, cfg.attack), 20)
    training = (cfg.attack.norm, cfg.attack.epsilon)
    suffix = "-" + study_name(attack, training, None if indices is None else len(indices))
    return cas_for_models(models, data, info.classes, attack, run.analysis, instance, cfg.seed, device, progress,
                          indices=indices, announce=announce, overwrite=overwrite, suffix=suffix)
