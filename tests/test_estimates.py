"""Every time estimate `atlens eval`, `cas` and `analyze` print is its cost model (gradient evaluations per example)
times one timed gradient evaluation. Both halves are checked: the cost model against the gradient evaluations the
work actually makes (counted, so exact under any load), and the product against the measured time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from atlens.analysis.cas import cas_for_models, estimate_cas_seconds
from atlens.analysis.runner import ANALYSES, AnalysisContext, AnalysisSettings, analyze_models
from atlens.analysis.runner import estimate_seconds as analysis_seconds
from atlens.attacks import ThreatModel
from atlens.data import PreparedData, prepare_data
from atlens.evaluation.accuracy import PGDAttack
from atlens.evaluation.attacks import ATTACKS
from atlens.evaluation.suite import estimate_seconds, evaluate_model
from atlens.models import build_model
from atlens.models.base import Normalize

COUNTED = 1.25  # the cost model is within this factor of the gradient evaluations made (docs/guide.md, "Evaluate")
TIMED = 2.0  # and the estimate within this factor of the measured time


class GradientCounter:
    """Gradient evaluations a model makes, in the estimates' unit: a forward pass of one example is a third of one,
    the backward pass to its input the other two thirds. Counted at the model's first layer (every atlens model
    normalises its input there), so calls through ``features`` count too."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.units = 0.0
        first = next(m for m in model.modules() if isinstance(m, Normalize))
        first.register_forward_hook(self._forward)

    def _forward(self, module, inputs, output) -> None:
        n = inputs[0].shape[0]
        self.units += n / 3
        if inputs[0].requires_grad:
            output.register_hook(lambda grad: self._add(2 * n / 3))

    def _add(self, units: float) -> None:
        self.units += units


def small_model(width: int = 8, image_size: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("preact_resnet18", 10, 3, image_size, [0.5] * 3, [0.25] * 3, {"width": width})


@pytest.fixture(scope="module")
def data() -> PreparedData:
    d = prepare_data("synthetic", options={"image_size": 8, "train_size": 60, "test_size": 60})
    return PreparedData(d.info, d.train, d.test, None, None)


SETTINGS = AnalysisSettings(examples=30, train_examples=30, weight_examples=16, lsc_mu=(-0.1, 0.0, 0.1),
                            lsc_directions=2, weight_radii=(0.0, 0.1, 0.2), weight_directions=2, surface_examples=2,
                            tsne_classes=2, tsne_per_class=8, gradcam_examples=2)
THREAT = ThreatModel("linf", 8 / 255)


@pytest.mark.parametrize("name", ["clean", "fgsm", "pgd20", "cw"])
def test_an_attacks_cost_is_the_gradient_evaluations_it_makes(tmp_path, data, name):
    model = small_model()
    counter = GradientCounter(model)
    evaluate_model(model, data.test, THREAT, tmp_path, "x", [name], 10, curve=False)
    assert counter.units / (ATTACKS.cost(name) * len(data.test)) == pytest.approx(1, rel=COUNTED - 1), name


def test_the_budget_curve_and_cas_cost_what_they_are_estimated_to(tmp_path, data):
    model = small_model()
    counter = GradientCounter(model)
    evaluate_model(model, data.test, THREAT, tmp_path, "x", ["clean"], 10, curve=True)
    per_example = counter.units / len(data.test)
    assert per_example == pytest.approx((ATTACKS.cost("clean") + 6 * 20), rel=COUNTED - 1)
    counter.units = 0.0
    cas_for_models({"m": model}, data.test, data.info.classes, PGDAttack(THREAT, 10), tmp_path)
    assert counter.units / len(data.test) == pytest.approx(10 + 2, rel=COUNTED - 1)


@pytest.mark.parametrize("name", list(ANALYSES))
def test_an_analysiss_cost_is_the_gradient_evaluations_it_makes(tmp_path, data, name):
    models = {"best": (small_model(), 3), "last": (small_model(), 9)}
    counters = [GradientCounter(model) for model, _ in models.values()]
    ctx = AnalysisContext(tmp_path, 0, data, THREAT, "cpu", SETTINGS, None, models)
    expected = ANALYSES[name].cost(ctx) * len(models)
    analyze_models(models, data, THREAT, tmp_path, [name], settings=SETTINGS)
    assert sum(c.units for c in counters) / expected == pytest.approx(1, rel=COUNTED - 1), name


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def test_estimates_are_within_a_factor_of_two_of_the_measured_time(tmp_path: Path):
    """On a network big enough that its gradients, not Python, take the time (the case where an estimate matters);
    each estimate is timed in the same process right before its work, so a busy machine slows both alike."""
    d = prepare_data("synthetic", options={"image_size": 32, "train_size": 96, "test_size": 96})
    data = PreparedData(d.info, d.train, d.test, None, None)
    model = small_model(width=8, image_size=32)
    ratios = {}
    estimate = estimate_seconds(model, data.test, ["clean", "pgd20"], False)
    ratios["eval"] = timed(lambda: evaluate_model(model, data.test, THREAT, tmp_path, "x", ["clean", "pgd20"], 10,
                                                  curve=False)) / estimate
    attack = PGDAttack(THREAT, 10)
    estimate = estimate_cas_seconds(model, data.test, attack)
    ratios["cas"] = timed(lambda: cas_for_models({"m": model}, data.test, d.info.classes, attack, tmp_path)) / estimate
    settings = AnalysisSettings(examples=64, train_examples=64, weight_examples=32, weight_radii=(0.0, 0.1),
                                weight_directions=2, lsc_mu=(-0.1, 0.0, 0.1), lsc_directions=2)
    for name in ("weights", "lsc"):
        models = {"best": (model, 1)}
        estimate = analysis_seconds(AnalysisContext(tmp_path, 0, data, THREAT, "cpu", settings, None, models), [name])
        ratios[name] = timed(lambda m=models, n=name: analyze_models(m, data, THREAT, tmp_path / n, [n],
                                                                     settings=settings)) / estimate
    assert all(1 / TIMED < ratio < TIMED for ratio in ratios.values()), ratios
