"""The cross-class-preserving criterion: its formula and gradient against a hand computation, weight 0 is CE."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from atlens.errors import ModelContractError
from atlens.training.cross_class import CrossClassPreserving
from tests.conftest import linear_classifier, train_run


def hand_loss(weight, x, y, reference, lam):
    """CE + λ · mean over ordered pairs of present classes of [cos_ref > 0] · relu(cos_ref − cos_now)², with loops."""
    logits = x.flatten(1) @ weight.T
    classes = sorted(set(y.tolist()))
    vectors = {c: torch.stack([x.flatten(1)[i] * weight[c] for i in range(len(y)) if y[i] == c]).mean(0)
               for c in classes}

    def cos(a, b):
        return (a @ b) / (a.norm() * b.norm())

    terms = [F.relu(cos(reference[i], reference[j]) - cos(vectors[i], vectors[j])) ** 2
             if cos(reference[i], reference[j]) > 0 else torch.tensor(0.0)
             for i, j in itertools.permutations(classes, 2)]
    return F.cross_entropy(logits, y) + lam * torch.stack(terms).mean()


def test_loss_and_gradient_match_a_hand_computation():
    torch.manual_seed(0)
    weight = torch.randn(4, 6)
    model = linear_classifier(weight)
    x, y = torch.randn(12, 6, 1, 1), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])  # class 3 absent
    criterion = CrossClassPreserving(weight=2.0, momentum=0.9)
    criterion.attach(model)
    reference = torch.randn(4, 6).abs()  # positive: strongly similar classes the batch falls short of
    criterion.reference, criterion.seen = reference.clone(), torch.ones(4, dtype=torch.bool)
    model.head.weight.requires_grad_(True)
    loss = criterion(model(x), y, x, model.features(x))
    loss.backward()
    mine = model.head.weight.grad.clone()

    independent = weight.clone().requires_grad_(True)
    expected = hand_loss(independent, x, y, reference, 2.0)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > F.cross_entropy(x.flatten(1) @ weight.T, y).item()  # the penalty is active here
    assert torch.allclose(mine, independent.grad, atol=1e-5)


def test_the_reference_moves_after_the_comparison():
    torch.manual_seed(1)
    model = linear_classifier(torch.randn(3, 4))
    x, y = torch.randn(6, 4, 1, 1), torch.tensor([0, 0, 1, 1, 2, 2])
    criterion = CrossClassPreserving(weight=1.0, momentum=0.75)
    criterion.attach(model)
    first = criterion(model(x), y, x, model.features(x))
    assert first.item() == pytest.approx(F.cross_entropy(model(x), y).item())  # nothing to compare with yet
    vectors = torch.stack([(x.flatten(1)[y == c] * model.head.weight[c]).mean(0) for c in range(3)]).detach()
    assert torch.allclose(criterion.reference, vectors)
    x2 = torch.randn(6, 4, 1, 1)
    criterion(model(x2), y, x2, model.features(x2))
    vectors2 = torch.stack([(x2.flatten(1)[y == c] * model.head.weight[c]).mean(0) for c in range(3)]).detach()
    assert torch.allclose(criterion.reference, 0.75 * vectors + 0.25 * vectors2, atol=1e-6)
    same = CrossClassPreserving(weight=5.0)
    same.attach(model)
    same.reference, same.seen = vectors2.clone(), torch.ones(3, dtype=torch.bool)
    no_collapse = same(model(x2), y, x2, model.features(x2))
    assert no_collapse.item() == pytest.approx(F.cross_entropy(model(x2), y).item())


def test_weight_zero_is_plain_cross_entropy(tmp_path):
    _, plain = train_run(tmp_path / "ce", **{"optim.epochs": 2})
    plain_rows = [r for r in (tmp_path / "ce" / "metrics.jsonl").read_text().splitlines()]
    _, zero = train_run(tmp_path / "zero", **{"optim.epochs": 2, "criterion": {"name": "cross_class", "weight": 0.0}})
    zero_rows = [r for r in (tmp_path / "zero" / "metrics.jsonl").read_text().splitlines()]
    strip = ("seconds",)

    def clean(lines):
        return [{k: v for k, v in json.loads(line).items() if k not in strip} for line in lines]

    assert clean(plain_rows) == clean(zero_rows)
    assert plain["best_robust_acc"] == zero["best_robust_acc"]


def test_a_model_without_features_is_refused_not_silently_trained_with_plain_cross_entropy():
    criterion = CrossClassPreserving(weight=1.0)
    criterion.attach(linear_classifier(torch.randn(3, 4)))
    with pytest.raises(ModelContractError, match="cross_class needs the model's features"):
        criterion(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(6, 4, 1, 1), None)


@pytest.mark.parametrize("objective", ["pgd_at", "trades"])
def test_it_composes_with_objectives_and_weight_perturbations(tmp_path, objective):
    """With AWP and either objective: weight 0 is the objective alone, weight 1 changes the training."""
    common = {"optim.epochs": 1, "objective": {"name": objective}, "perturbation": {"name": "awp", "gamma": 0.005}}
    plain, _ = train_run(tmp_path / "plain", **common)
    runs = {w: train_run(tmp_path / f"w{w}", **common, criterion={"name": "cross_class", "weight": w})[0]
            for w in (0.0, 1.0)}
    loss = {key: run.read_metrics()[0]["train_loss"] for key, run in (("plain", plain), *runs.items())}
    assert loss[0.0] == pytest.approx(loss["plain"], rel=1e-6)
    assert math.isfinite(loss[1.0]) and loss[1.0] != pytest.approx(loss["plain"], rel=1e-4)
    assert json.loads((runs[1.0].path / "methods.json").read_text())["criterion"]["name"] == "cross_class"
