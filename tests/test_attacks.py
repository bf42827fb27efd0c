import pytest
import torch
import torch.nn.functional as F

from atlens.attacks import ThreatModel, fgsm, fgsm_rs, margin_loss, pgd
from atlens.attacks.pgd import mode
from tests.conftest import linear_classifier


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_projection_stays_in_ball_and_box(norm, eps):
    threat = ThreatModel(norm, eps)
    torch.manual_seed(0)
    x = torch.rand(32, 3, 8, 8)
    delta = threat.project(torch.randn_like(x) * 3, x)
    x_adv = x + delta
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    norms = delta.abs().flatten(1).amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
    assert (norms <= eps + 1e-6).all()
    start = threat.random_start(x)
    norms = start.abs().flatten(1).amax(1) if norm == "linf" else start.flatten(1).norm(dim=1)
    assert (norms <= eps + 1e-6).all() and ((x + start) >= 0).all() and ((x + start) <= 1).all()


def test_projection_is_identity_inside_the_ball():
    threat = ThreatModel("l2", 1.0)
    x = torch.full((4, 1, 4, 4), 0.5)
    delta = torch.full_like(x, 0.01)
    assert torch.equal(threat.project(delta, x), (x + delta).clamp(0, 1) - x)


def test_pgd_linf_reaches_analytic_worst_case_on_linear_model():
    torch.manual_seed(0)
    w = torch.randn(2, 16)
    model = linear_classifier(w)
    eps = 0.1
    x = 0.2 + 0.6 * torch.rand(8, 1, 4, 4)  # interior: the box constraint is inactive
    y = torch.randint(0, 2, (8,))
    x_adv = pgd(model, x, y, ThreatModel("linf", eps), steps=20, step_size=eps / 4)
    other = 1 - y
    expected = -eps * torch.sign(w[y] - w[other]).view_as(x)
    assert torch.allclose(x_adv - x, expected, atol=1e-6)


def test_pgd_l2_aligns_with_weight_difference_on_linear_model():
    torch.manual_seed(1)
    w = torch.randn(2, 16)
    model = linear_classifier(w)
    eps = 0.3
    x = 0.3 + 0.4 * torch.rand(4, 1, 4, 4)
    y = torch.zeros(4, dtype=torch.long)
    x_adv = pgd(model, x, y, ThreatModel("l2", eps), steps=200, step_size=eps / 8)
    direction = (w[1] - w[0]) / (w[1] - w[0]).norm()
    assert torch.allclose((x_adv - x).flatten(1), eps * direction.expand(4, -1), atol=1e-4)


def test_cw_margin_on_linear_model_reaches_analytic_margin():
    torch.manual_seed(2)
    w, b = torch.randn(2, 16), torch.randn(2)
    model = linear_classifier(w, b)
    eps = 0.05
    x = 0.3 + 0.4 * torch.rand(6, 1, 4, 4)
    y = torch.randint(0, 2, (6,))
    x_adv = pgd(model, x, y, ThreatModel("linf", eps), steps=100, loss="margin")
    o = 1 - y
    diff = w[o] - w[y]
    expected = (diff * x.flatten(1)).sum(1) + b[o] - b[y] + eps * diff.abs().sum(1)
    with torch.no_grad():
        reached = margin_loss(model(x_adv), y)
    assert torch.allclose(reached, expected, atol=1e-4)


def _mean_ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def test_pgd_beats_fgsm_beats_clean_on_trained_model(trained_digits_model, digits):
    model = trained_digits_model
    _, test = digits
    x, y = test.images[:200], test.labels[:200]
    threat = ThreatModel("linf", 0.1)
    torch.manual_seed(0)
    clean = _mean_ce(model, x, y)
    fg = _mean_ce(model, fgsm(model, x, y, threat), y)
    pg = _mean_ce(model, pgd(model, x, y, threat, steps=10), y)
    assert pg >= fg >= clean
    assert pg > clean + 0.5  # the attack matters on this model


def test_restarts_never_lower_the_loss(trained_digits_model, digits):
    model = trained_digits_model
    _, test = digits
    x, y = test.images[:100], test.labels[:100]
    threat = ThreatModel("linf", 0.08)
    torch.manual_seed(3)
    one = pgd(model, x, y, threat, steps=3, restarts=1)
    torch.manual_seed(3)  # the first restart of the multi-restart run draws the same start
    many = pgd(model, x, y, threat, steps=3, restarts=4)
    with torch.no_grad():
        l1 = F.cross_entropy(model(one), y, reduction="none")
        l4 = F.cross_entropy(model(many), y, reduction="none")
    assert (l4 >= l1 - 1e-6).all()
    assert l4.sum() > l1.sum()


def test_crafting_computes_no_parameter_gradients_and_restores_mode(trained_digits_model, digits):
    model = trained_digits_model
    _, test = digits
    x, y = test.images[:16], test.labels[:16]
    model.train()
    for p in model.parameters():
        p.grad = None
    for attack in (lambda: pgd(model, x, y, ThreatModel("linf", 0.1), steps=2, bn_mode="eval"),
                   lambda: fgsm_rs(model, x, y, ThreatModel("linf", 0.1))):
        attack()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert model.training
    model.eval()


def test_mode_restores_each_module_flag():
    model = linear_classifier(torch.randn(2, 4))
    model.train()
    model.head.eval()
    with mode(model, False):
        assert not model.training and not model.head.training
    assert model.training and not model.head.training


def test_epsilon_zero_changes_nothing():
    model = linear_classifier(torch.randn(3, 16))
    x = torch.rand(5, 1, 4, 4)
    y = torch.randint(0, 3, (5,))
    assert torch.equal(pgd(model, x, y, ThreatModel("linf", 0.0), steps=3), x)


def test_threat_model_rejects_bad_input():
    with pytest.raises(ValueError, match="norm"):
        ThreatModel("l1", 0.1)
    with pytest.raises(ValueError, match="epsilon"):
        ThreatModel("linf", -0.1)
