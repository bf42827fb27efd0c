import json

import pytest
import torch

from atlens.attacks import ThreatModel, pgd
from atlens.cli.main import main
from atlens.config import config_from_dict
from atlens.errors import ConfigError
from atlens.theory import closed_form as cf
from atlens.theory.distribution import CrossClassModel, lemma2_delta
from atlens.theory.numerics import SymmetricLinear, margin_and_others, solve, theorem2_monte_carlo, threshold
from atlens.training.build import build, check
from atlens.training.run import train_to_completion

SETTINGS = [(1.0, 0.5, 1.0, 0.2), (2.0, 1.5, 0.5, 0.1), (1.0, 0.2, 2.0, 0.3)]


def test_distribution_matches_the_paper_layout():
    model = CrossClassModel()
    x, y = model.sample(3000, torch.Generator().manual_seed(0))
    class1 = x[y == 0]
    assert torch.equal((class1 != 0).float().mean(0).round(), torch.tensor([1.0, 0, 0, 0, 1, 1]))
    assert class1[:, 0].mean().item() == pytest.approx(1.0, abs=0.05)
    assert class1[:, 0].std().item() == pytest.approx(0.5, abs=0.05)
    assert torch.equal(lemma2_delta(model, torch.tensor([0]), 0.1), 0.1 * torch.tensor([[-1.0, 1, 1, 1, -1, -1]]))
    w = model.symmetric_weight_matrix(2.0, 3.0)
    assert torch.equal(w[0], torch.tensor([2.0, 0, 0, 0, 3, 3]))  # f_1 = w1·x_E1 + w2·(x_C2 + x_C3)
    extended = CrossClassModel(classes=4, copies=2)
    assert extended.dim == (4 + 6) * 2


@pytest.mark.parametrize("mu,sigma,lam,beta", SETTINGS)
def test_numerical_minimisers_agree_with_closed_forms(mu, sigma, lam, beta):
    model = CrossClassModel(3, 1, mu, sigma)
    scale = mu / lam
    for eps in (0.1 * mu, 0.3 * mu, 0.45 * mu):
        for inner in ("pgd", "lemma2"):
            at = solve(model, eps, lam, 0.0, inner, samples=20_000)
            assert abs(at.w1 - cf.w1_at(mu, sigma, lam, eps)) <= 0.02 * scale
            assert abs(at.w2 - cf.w2_at(mu, sigma, lam, eps)) <= 0.02 * scale
            ls = solve(model, eps, lam, beta, inner, samples=20_000)
            assert abs(ls.w1 - cf.w1_ls_at(mu, sigma, lam, eps, beta)) <= 0.02 * scale
            assert abs(ls.w2 - cf.w2_ls_at(mu, sigma, lam, eps, beta)) <= 0.02 * scale
    assert abs(threshold(model, lam, 0.0, "pgd") - cf.epsilon0(mu, sigma)) <= 0.01 * mu
    # ε1 can exceed μ/2 (when σ/√π < μβ/(1−β)): then w2^LS > 0 on the whole range and bisection stops at μ/2
    expected = min(cf.epsilon1(mu, sigma, beta), mu / 2)
    assert abs(threshold(model, lam, beta, "lemma2") - expected) <= 0.01 * mu


def test_lemma2_delta_is_the_pgd_optimum_on_sampled_data():
    model = CrossClassModel()
    x, y = model.sample(3000, torch.Generator().manual_seed(1))
    f = SymmetricLinear(model, 0.7, 0.4)
    eps = 0.2
    worst = x + lemma2_delta(model, y, eps)
    threat = ThreatModel("linf", eps, box=None)
    torch.manual_seed(0)
    # the margin is a max of linear pieces: a random start may settle on the lower piece, so one run
    # starts from zero (the higher piece is active there) and each example keeps its best
    runs = [pgd(f, x, y, threat, steps=40, step_size=eps / 8, loss="margin", restarts=3),
            pgd(f, x, y, threat, steps=40, step_size=eps / 8, loss="margin", start="zero")]
    with torch.no_grad():
        lemma_margin = margin_and_others(f(worst), y)[0]
        pgd_margin = torch.maximum(*[margin_and_others(f(r), y)[0] for r in runs])
    assert (pgd_margin <= lemma_margin + 1e-5).all()  # Lemma 2's δ is never beaten
    assert torch.allclose(pgd_margin, lemma_margin, atol=1e-4)  # and PGD reaches it
    ce = pgd(f, x, y, ThreatModel("linf", eps, box=None), steps=10, step_size=eps / 4)
    assert torch.allclose(ce, worst, atol=1e-6)  # the cross-entropy attack lands exactly on it


def test_theorem2_monte_carlo_matches_and_increases():
    mu, sigma, eps = 1.0, 0.5, 0.2
    model = CrossClassModel(3, 1, mu, sigma)
    estimates = []
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        p, se = theorem2_monte_carlo(model, t, eps, samples=100_000, seed=int(t * 8))
        assert abs(p - cf.theorem2_probability(t, mu, sigma, eps)) <= 3 * se
        estimates.append(p)
    assert estimates == sorted(estimates)
    # the paper's variance (2σ²) is contradicted: 0.802 against 0.885 simulated at t = 0
    assert cf.theorem2_probability(0, mu, sigma, eps, paper_variance=True) == pytest.approx(0.802, abs=1e-3)
    assert estimates[0] == pytest.approx(0.885, abs=0.005)


def test_label_smoothing_keeps_more_cross_class_weight():
    mu, sigma, lam, beta = 1.0, 0.5, 1.0, 0.2
    e1 = cf.epsilon1(mu, sigma, beta)
    assert e1 > cf.epsilon0(mu, sigma)
    for i in range(1, 20):
        eps = e1 * i / 20
        gap = cf.w2_ls_at(mu, sigma, lam, eps, beta) - cf.w2_at(mu, sigma, lam, eps)
        assert gap > 0
        if eps < cf.epsilon0(mu, sigma):
            assert gap == pytest.approx(beta * (2 * eps + sigma / cf.SQRT_PI) / lam)


def test_crossclass_dataset_trains_with_atlens(tmp_path):
    cfg = config_from_dict({
        "data": {"name": "crossclass", "train_size": 600, "test_size": 300, "batch_size": 100},
        "model": {"name": "mlp", "hidden": []},
        "attack": {"epsilon": 0.2, "steps": 5},
        "optim": {"epochs": 3, "lr": 0.1},
        "eval": {"steps": 5},
        "runtime": {"progress": False},
    })
    parts = build(check(cfg), torch.device("cpu"))
    assert parts.objective.attack.threat.box is None  # feature-space data: no clamping to [0, 1]
    assert train_to_completion(cfg, tmp_path / "run", log=lambda m: None)["best_robust_acc"] > 0.6


@pytest.mark.slow
def test_theory_command(tmp_path, capsys, monkeypatch):
    import functools

    from atlens.theory import report

    # 3 of the 9 ε points: the solver's agreement at every point is test_numerical_minimisers_agree_with_closed_forms
    monkeypatch.setattr(report, "run_theory", functools.partial(report.run_theory, points=3))
    assert main(["theory", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "theory.json").read_text())
    assert abs(result["thresholds"]["epsilon0_difference"]) <= 0.01
    assert result["theorem2"]["monte_carlo_matches_corrected_variance"]
    assert (tmp_path / "theory.png").is_file()
    out = capsys.readouterr().out
    assert "increasing in t = w2/w1 (the claim): yes" in out and "expected: no" in out  # every check says what it means
    assert "False" not in out and "True" not in out
    with pytest.raises(ConfigError, match="sigma < sqrt"):
        from atlens.theory.report import run_theory

        run_theory(tmp_path, mu=1.0, sigma=2.0)
