"""Training objectives against their formulas, on a hand-built model whose logits are known."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atlens.attacks import ThreatModel
from atlens.training.objectives import MART, PGDAT, TRADES, FastAT, TrainAttack, TrainingBatch
from tests.conftest import linear_classifier

# logits = W·x for x in R^2: easy to write down by hand
W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
X = torch.tensor([[0.2, 0.6], [0.9, 0.1]])
X_ADV = torch.tensor([[0.3, 0.5], [0.8, 0.2]])
Y = torch.tensor([1, 0])


def model():
    return linear_classifier(W).train()


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def logits_of(x):
    return [[sum(w * v for w, v in zip(wr, xr)) for wr in W.tolist()] for xr in x.tolist()]


def attack(random_start=True, bn_mode=None):
    return TrainAttack(ThreatModel("linf", 0.1), 3, None, random_start, bn_mode)


def batch():
    return TrainingBatch(X.view(2, 1, 1, 2), X_ADV.view(2, 1, 1, 2), Y)


def test_trades_loss_is_ce_on_clean_plus_beta_kl_clean_to_adversarial():
    beta = 6.0
    expected = 0.0
    for clean, adv, y in zip(logits_of(X), logits_of(X_ADV), Y.tolist()):
        p, q = softmax(clean), softmax(adv)
        expected += -math.log(p[y]) + beta * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    out = TRADES(attack(), beta=beta).loss(model(), batch())
    assert out.loss.item() == pytest.approx(expected / 2, rel=1e-5)
    assert out.per_example.mean().item() == pytest.approx(expected / 2, rel=1e-5)
    per_example = TRADES(attack(), beta=beta).per_example_loss(model(), batch())
    assert per_example.mean().item() == pytest.approx(expected / 2, rel=1e-5)


def test_pgd_at_and_fast_at_minimise_cross_entropy_on_the_crafted_inputs():
    expected = sum(-math.log(softmax(adv)[y]) for adv, y in zip(logits_of(X_ADV), Y.tolist())) / 2
    for objective in (PGDAT(attack()), FastAT(attack())):
        assert objective.loss(model(), batch()).loss.item() == pytest.approx(expected, rel=1e-6)


def test_fast_at_is_one_step_of_step_multiplier_epsilon_from_a_random_start():
    # on a linear model the sign of ∇x CE is constant in x, so from any start the step is exact
    net = linear_classifier(W).eval()
    x, y = X.view(2, 1, 1, 2), Y
    threat = ThreatModel("linf", 0.1)
    grad_sign = torch.autograd.functional.jacobian(
        lambda inp: F.cross_entropy(net(inp), y, reduction="sum"), x).sign()
    torch.manual_seed(0)
    start = threat.random_start(x)
    torch.manual_seed(0)
    x_adv = FastAT(attack(bn_mode="eval"), step_multiplier=1.25).craft(net, x, y).x_adv
    assert torch.allclose(x_adv - x, threat.project(start + 0.125 * grad_sign, x), atol=1e-7)


def test_mart_loss_is_its_formula():
    beta = 6.0
    expected = 0.0
    for clean, adv, y in zip(logits_of(X), logits_of(X_ADV), Y.tolist()):
        p, q = softmax(clean), softmax(adv)
        ranked = sorted(range(3), key=lambda k: -q[k])
        wrong = ranked[1] if ranked[0] == y else ranked[0]
        bce = -math.log(q[y]) - math.log(1.0001 - q[wrong] + 1e-12)
        kl = sum(pi * (math.log(pi) - math.log(qi + 1e-12)) for pi, qi in zip(p, q))
        expected += bce + beta * kl * (1.0000001 - p[y])
    objective = MART(attack(), beta=beta)
    out = objective.loss(model(), batch())
    assert out.loss.item() == pytest.approx(expected / 2, rel=1e-5)
    assert objective.per_example_loss(model(), batch()).mean().item() == pytest.approx(expected / 2, rel=1e-5)


def test_trades_and_mart_craft_in_eval_mode_unless_told_and_trades_needs_a_random_start():
    assert TRADES(attack()).bn_mode == "eval" and MART(attack()).bn_mode == "eval"
    assert TRADES(attack(bn_mode="train")).bn_mode == "train" and PGDAT(attack()).bn_mode == "train"
    with pytest.raises(ValueError, match="random_start"):
        TRADES(attack(random_start=False))


def test_crafting_in_frozen_train_mode_uses_batch_statistics_and_leaves_the_running_ones():
    """Wang et al.'s TRADES crafts with the model in train mode and track_bn_stats(False), from x + U(−ε, ε)."""
    from torch import nn

    from atlens.attacks.pgd import crafting_mode

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 2 * 2, 3))
    net[1].running_mean.fill_(5.0)  # far from any batch's mean: which statistics normalise shows in the logits
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with crafting_mode(net, "frozen"):
        frozen_logits = net(x)
    with crafting_mode(net, "train"):
        train_logits = net(x)  # batch statistics too, but this one moves the running statistics
    assert torch.allclose(frozen_logits, train_logits)
    assert not torch.equal(net[1].running_mean, before["1.running_mean"])
    net.load_state_dict(before)
    net.eval()
    objective = TRADES(TrainAttack(ThreatModel("linf", 0.1), 3, None, True, "frozen"), start="uniform")
    out = objective.craft(net, x, y)
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # no BatchNorm buffer moved
    assert not net.training  # the caller's mode is back
    assert (out.x_adv - x).abs().max() <= 0.1 + 1e-6 and objective.describe()["start"] == "uniform"
    with pytest.raises(ValueError, match="start"):
        TRADES(attack(), start="gaussian")
