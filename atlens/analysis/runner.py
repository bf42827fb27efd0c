"""``atlens analyze``: landscapes, Grad-CAM, local linearity and t-SNE for a run's checkpoints or for any
model (``--model``).

Every analysis writes ``<out>/<name>.json`` (parameters, per-model results, seconds) and the figure
``<out>/<name>.png`` beside it; for a run, ``out`` is ``RUN/analysis``.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlens.analysis.embedding import class_subset, logits_of, tsne_embedding
from atlens.analysis.gradcam import feature_map_layer, grad_cam
from atlens.analysis.landscapes import craft, input_loss_surface, lsc_landscape, weight_robustness_curve
from atlens.analysis.linearity import local_linearity
from atlens.attacks import ThreatModel, threat_model
from atlens.config import load_config
from atlens.data import BatchLoader, ImageTensors, PreparedData
from atlens.errors import ConfigError
from atlens.evaluation import PGDAttack, seconds_per_gradient
from atlens.files import write_json
from atlens.plots import analyses as figures
from atlens.runs import RunDirectory, distinct_checkpoints, load_model_and_epoch, replacing, run_data


@dataclass
class AnalysisSettings:
    examples: int = 1000  # test examples (linearity, Grad-CAM)
    train_examples: int = 1000  # training examples crafted for the LSC landscape
    # the weight curve re-attacks every perturbed model (1 + directions x radii attacks per checkpoint)
    weight_examples: int = 256
    lsc_mu: tuple[float, ...] = tuple(round(-0.5 + 0.05 * i, 2) for i in range(21))
    lsc_directions: int = 5
    weight_radii: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    weight_directions: int = 10
    surface_examples: int = 4
    tsne_classes: int = 4
    tsne_per_class: int = 100
    gradcam_examples: int = 8


@dataclass
class AnalysisContext:
    out: Path  # where the JSON and figures go
    seed: int
    data: PreparedData
    threat: ThreatModel
    device: str
    settings: AnalysisSettings
    progress: Callable | None = None  # progress(iterable, label, unit) -> iterable
    models: dict[str, tuple[nn.Module, int | None]] = field(default_factory=dict)

    def bar(self, label: str, unit: str = "batch") -> Callable | None:
        """A one-argument progress wrapper that says what it is counting (which checkpoint, which stage, in which
        ``unit``)."""
        return None if self.progress is None else (lambda iterable: self.progress(iterable, label, unit))

    @property
    def test(self):
        return self.data.test.balanced(self.settings.examples, self.seed)

    def attack(self, steps: int = 20) -> PGDAttack:
        """PGD-``steps`` at the threat model, α = ε/4 (L∞) or ε/8 (L2), eval mode."""
        return PGDAttack(self.threat, steps)


def _lsc(ctx: AnalysisContext) -> dict[str, Any]:
    s = ctx.settings
    train = ctx.data.train.balanced(s.train_examples, ctx.seed)
    attack = ctx.attack(steps=10)
    results = {}
    for name, (model, epoch) in ctx.models.items():
        adversarial = craft(model, train, attack, ctx.device, ctx.seed,
                            progress=ctx.bar(f"{name}: PGD-10 on {len(train)} training examples"))
        results[name] = {"epoch": epoch, **lsc_landscape(model, adversarial, s.lsc_mu, s.lsc_directions,
                                                          ctx.seed, ctx.bar(f"{name}: weight directions", "direction"))}
    figures.plot_lsc_landscape(results, ctx.out / "lsc.png")
    return {"parameters": {"attack": attack.describe(), "train_examples": len(train)}, "checkpoints": results}


def _weights(ctx: AnalysisContext) -> dict[str, Any]:
    s = ctx.settings
    data = ctx.data.test.balanced(min(s.examples, s.weight_examples), ctx.seed)
    attack = ctx.attack(steps=10)
    results = {name: {"epoch": epoch, **weight_robustness_curve(model, data, attack, s.weight_radii,
                                                                s.weight_directions, ctx.device, ctx.seed,
                                                                ctx.bar(f"{name}: weight directions", "direction"))}
               for name, (model, epoch) in ctx.models.items()}
    figures.plot_weight_curve(results, ctx.out / "weights.png")
    return {"parameters": {"attack": attack.describe()}, "checkpoints": results}


def _landscape(ctx: AnalysisContext) -> dict[str, Any]:
    x, y = next(iter(BatchLoader(ctx.data.test.balanced(ctx.settings.surface_examples, ctx.seed), 256, ctx.device)))
    results = {name: {"epoch": epoch, **input_loss_surface(model, x, y, ctx.threat, seed=ctx.seed)}
               for name, (model, epoch) in ctx.models.items()}
    figures.plot_input_surfaces(results, ctx.out / "landscape.png", ctx.threat.epsilon)
    return {"parameters": {"epsilon": ctx.threat.epsilon, "span": 2.0}, "checkpoints": results}


def _linearity(ctx: AnalysisContext) -> dict[str, Any]:
    results = {name: {"epoch": epoch, "local_linearity": local_linearity(model, ctx.test, ctx.threat,
                                                                         device=ctx.device, seed=ctx.seed)}
               for name, (model, epoch) in ctx.models.items()}
    figures.plot_linearity(results, ctx.out / "linearity.png")
    return {"parameters": {"epsilon": ctx.threat.epsilon, "examples": len(ctx.test)}, "checkpoints": results}


def _tsne_examples(ctx: AnalysisContext) -> ImageTensors:
    s = ctx.settings
    return class_subset(ctx.data.test, min(s.tsne_classes, ctx.data.info.num_classes), s.tsne_per_class)


def _tsne(ctx: AnalysisContext) -> dict[str, Any]:
    subset = _tsne_examples(ctx)
    attack = ctx.attack()
    results = {}
    for name, (model, epoch) in ctx.models.items():
        images = next(iter(BatchLoader(subset, len(subset), ctx.device)))[0]
        adversarial = craft(model, subset, attack, ctx.device, ctx.seed).images
        embedding = tsne_embedding(logits_of(model, images), logits_of(model, adversarial), subset.labels, ctx.seed)
        results[name] = {"epoch": epoch, **embedding}
    figures.plot_tsne(results, ctx.data.info.classes, ctx.out / "tsne.png")
    return {"parameters": {"attack": attack.describe(), "examples": len(subset)}, "checkpoints": results}


def _gradcam(ctx: AnalysisContext) -> dict[str, Any]:
    """Two checkpoints: the examples the first classifies right and the second wrong under attack, each with
    both models' maps. One model: its first examples, right or wrong."""
    check_request(["gradcam"], len(ctx.models))
    attack = ctx.attack()
    test = ctx.test
    labels = test.labels.to(ctx.device)
    adversarial = {name: craft(model, test, attack, ctx.device, ctx.seed).images
                   for name, (model, _) in ctx.models.items()}
    right = {name: logits_of(model, adversarial[name]).argmax(1) == labels.cpu()
             for name, (model, _) in ctx.models.items()}
    result: dict[str, Any] = {"parameters": {"attack": attack.describe(), "examples": len(test)},
                              "checkpoints": {name: {"epoch": epoch} for name, (_, epoch) in ctx.models.items()}}
    if len(ctx.models) == 2:
        first, second = right.values()
        shown = first & ~second
        result["first_right_second_wrong"] = int(shown.sum())
    else:
        shown = torch.ones(len(test), dtype=torch.bool)
    chosen = _across_classes(torch.nonzero(shown).flatten(), test.labels, ctx.settings.gradcam_examples)
    result["indices"] = chosen.tolist()
    if len(chosen) == 0:
        return result
    x = next(iter(BatchLoader(test.subset(chosen), len(chosen), ctx.device)))[0]
    y = labels[chosen.to(ctx.device)]
    columns = []
    for name, (model, epoch) in ctx.models.items():
        inputs = adversarial[name][chosen.to(ctx.device)]
        cams = grad_cam(model, inputs, y, feature_map_layer(model, inputs)).cpu()
        marks = ["right" if r else "wrong" for r in right[name][chosen].tolist()]
        title = f"{name}" + (f" (ep {epoch})" if epoch is not None else "")
        columns.append((title, inputs, cams, marks))
    names = ctx.data.info.classes
    figures.plot_gradcam(x, columns, [names[int(c)] for c in y], ctx.out / "gradcam.png")
    return result


def _across_classes(candidates: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """Up to ``n`` of ``candidates``, taken class by class in turns (image folders are sorted by class)."""
    pools = [candidates[labels[candidates] == c] for c in labels[candidates].unique().tolist()]
    chosen, depth = [], 0
    while len(chosen) < n and any(depth < len(pool) for pool in pools):
        chosen += [pool[depth] for pool in pools if depth < len(pool)][: n - len(chosen)]
        depth += 1
    return torch.stack(chosen).sort().values if chosen else candidates[:0]


def _epochs(result: dict[str, Any]) -> str:
    return ", ".join(f"{k} (epoch {v.get('epoch')})" for k, v in result.get("checkpoints", {}).items())


@dataclass(frozen=True)
class Analysis:
    run: Callable[[AnalysisContext], dict[str, Any]]
    # input-gradient evaluations (forward + backward of one example) per model, for the time estimate;
    # a forward pass alone counts as a third of one
    cost: Callable[[AnalysisContext], float]
    caption: str  # the figure's caption in reports
    note: Callable[[dict[str, Any]], str] = _epochs  # one line on a written result, for reports


class AnalysisTable:
    """Analyses by name (``atlens analyze --what``): each writes ``<name>.json`` and its figure ``<name>.png``.
    ``register`` adds one; a module listed under a run config's ``imports`` or ``atlens --import`` can add its own."""

    def __init__(self) -> None:
        self.entries: dict[str, Analysis] = {}

    def register(self, name: str, cost: Callable[[AnalysisContext], float], caption: str,
                 note: Callable[[dict[str, Any]], str] = _epochs) -> Callable[[Callable], Callable]:
        def decorator(run: Callable[[AnalysisContext], dict[str, Any]]) -> Callable:
            self.entries[name] = Analysis(run, cost, caption, note)
            return run

        return decorator

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> Analysis:
        return self.entries[name]

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


ANALYSES = AnalysisTable()
# PGD-10 on the training examples, then a forward pass of them at every μ along every direction
ANALYSES.register("lsc", lambda c: min(c.settings.train_examples, len(c.data.train))
                  * (11 + len(c.settings.lsc_mu) * c.settings.lsc_directions / 3),
                  "LSC weight-loss landscape (Yu et al. Fig. 2)")(_lsc)
# PGD-20 on the test examples, then Grad-CAM on a few
ANALYSES.register("gradcam", lambda c: len(c.test) * 22,
                  "Grad-CAM on the true class: first checkpoint right, second wrong (CAS paper Fig. 3c)",
                  lambda r: f"{r.get('first_right_second_wrong', 0)} examples right under the first checkpoint, "
                            f"wrong under the second")(_gradcam)
# a forward pass at every point of the grid around each example
ANALYSES.register("landscape", lambda c: c.settings.surface_examples * 21 ** 2 / 3,
                  "Input loss landscape (Chen et al. Fig. 6)")(_landscape)
# PGD-10 on the unperturbed model and on every (direction, radius other than 0)
ANALYSES.register("weights", lambda c: min(c.settings.examples, c.settings.weight_examples)
                  * 11 * (1 + sum(r != 0 for r in c.settings.weight_radii) * c.settings.weight_directions),
                  "Weight-space robustness curve (Chen et al. Fig. 7)",
                  lambda r: "; ".join(f"{k}: loss {v['robust_loss_mean'][0]:.3f} → {v['robust_loss_mean'][-1]:.3f}"
                                      for k, v in r.get("checkpoints", {}).items()))(_weights)
# the input gradient at x and at one random point of the ball
ANALYSES.register("linearity", lambda c: len(c.test) * 2, "Local linearity",
                  lambda r: ", ".join(f"{k}: {v['local_linearity']:.4f}"
                                      for k, v in r.get("checkpoints", {}).items()))(_linearity)
# PGD-20 on the subset, then the clean and adversarial logits (t-SNE's own time is not counted)
ANALYSES.register("tsne", lambda c: len(_tsne_examples(c)) * (20 + 2 / 3),
                  "t-SNE of clean and adversarial logits")(_tsne)


def estimate_seconds(ctx: AnalysisContext, what: list[str]) -> float:
    """Seconds the named analyses take on ``ctx``'s models, from one timed gradient evaluation."""
    if not ctx.models:
        return 0.0
    model = next(iter(ctx.models.values()))[0]
    per_model = sum(ANALYSES[name].cost(ctx) for name in what)
    return per_model * len(ctx.models) * seconds_per_gradient(model, ctx.test, ctx.device)


def checkpoint_names(run: RunDirectory, spec: str) -> list[str]:
    """``best,last,epoch-N`` as given, or ``all``: every epoch-N checkpoint in order, then best and last."""
    if spec.strip() != "all":
        return [n.strip() for n in spec.split(",") if n.strip()]
    def epoch(path: Path) -> int:
        return int(re.sub(r"\D", "", path.stem) or 0)

    saved = sorted(run.checkpoints.glob("epoch-*.pt"), key=epoch)
    return [p.stem for p in saved] + ["best", "last"]


def check_request(what: list[str], models: int) -> None:
    """Refuse an unknown analysis, or Grad-CAM on more than two models, before any work."""
    unknown = [w for w in what if w not in ANALYSES]
    if unknown:
        close = [m for w in unknown for m in difflib.get_close_matches(w, ANALYSES.names, n=1)]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown analysis {', '.join(unknown)}{hint}; choose from {', '.join(ANALYSES.names)}")
    if "gradcam" in what and models > 2:
        raise ConfigError(f"Grad-CAM shows one model or compares two (e.g. --checkpoints best,last), got {models}")


def analyze_models(models: dict[str, tuple[nn.Module, int | None]], data: PreparedData, threat: ThreatModel,
                   out: Path, what: list[str], seed: int = 0, device: str = "cpu",
                   settings: AnalysisSettings | None = None, progress: Callable | None = None,
                   report: Callable[[str, float], None] | None = None,
                   announce: Callable[[float], None] | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Run the named analyses on ``models`` (name -> (model, epoch or None)); returns the JSON file written for
    each, in ``out``. ``announce(seconds)`` hears the time estimate first. Earlier results of the same analyses
    are replaced only with ``overwrite`` (``atlens.runs.results``)."""
    check_request(what, len(models))
    ctx = AnalysisContext(Path(out), seed, data, threat, device, settings or AnalysisSettings(), progress, models)
    written = {}
    with replacing(ctx.out, [f"{name}.json" for name in what], overwrite):
        if announce:
            announce(estimate_seconds(ctx, what))
        ctx.out.mkdir(parents=True, exist_ok=True)
        for name in what:
            started = time.perf_counter()
            result = ANALYSES[name].run(ctx)
            result["seconds"] = round(time.perf_counter() - started, 2)
            written[name] = ctx.out / f"{name}.json"
            write_json(written[name], result)
            if report:
                report(name, result["seconds"])
    return written


def analyze_run(run_path: str | Path, what: list[str], checkpoints: str = "best,last", device: str = "cpu",
                settings: AnalysisSettings | None = None, progress: Callable | None = None,
                report: Callable[[str, float], None] | None = None,
                note: Callable[[str], None] | None = None,
                announce: Callable[[float], None] | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Run the named analyses on the named checkpoints of a run; returns the JSON file written for each."""
    run = RunDirectory(run_path)
    check_request(what, len(checkpoint_names(run, checkpoints)))
    if not run.exists():
        raise ConfigError(f"{run_path} is not a run directory (no config.yaml)")
    cfg = load_config(run.config)
    data = run_data(cfg)
    models = {run.checkpoint_label(name): load_model_and_epoch(run.path, name, device, data.info)
              for name in checkpoint_names(run, checkpoints)}
    models = distinct_checkpoints(models, note)
    threat = threat_model(bounds=data.info.bounds, base=cfg.attack)
    return analyze_models(models, data, threat, run.analysis, what, cfg.seed, device, settings, progress, report,
                          announce, overwrite)
