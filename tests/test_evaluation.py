import json

import pytest
import torch
import torch.nn.functional as F

from atlens.attacks import ThreatModel, margin_loss
from atlens.cli.main import main
from atlens.data import ImageTensors
from atlens.data.tensors import to_unit_float
from atlens.evaluation import PGDAttack, evaluate
from atlens.evaluation.attacks import ATTACKS, Context, TransferAttack
from atlens.evaluation.autoattack import AutoAttackAdapter
from atlens.evaluation.suite import NamedAttack, evaluate_attacks, format_table
from tests.conftest import linear_classifier, train_run

ALL = ["clean", "fgsm", "pgd20", "pgd100", "cw", "autoattack"]


@pytest.fixture(scope="module")
def digits_subset(digits):
    _, test = digits
    return test.head(120)


def run_suite(model, data, names, eps):
    threat = ThreatModel("linf", eps)
    specs = [ATTACKS.build(n, Context(model, threat, 10)) for n in names]
    return evaluate_attacks(model, data, specs)


@pytest.mark.slow
def test_zero_budget_gives_clean_accuracy_for_every_attack(trained_digits_model, digits_subset):
    model = trained_digits_model
    data = digits_subset.head(20)
    results = run_suite(model, data, ALL, 0.0)
    clean = results["clean"]["accuracy"]
    x, y = to_unit_float(data.images), data.labels
    with torch.no_grad():
        assert clean == pytest.approx((model.eval()(x).argmax(1) == y).float().mean().item())  # the plain forward's
    for name in ALL:
        assert results[name]["accuracy"] == pytest.approx(clean)
    transfer = TransferAttack(model, PGDAttack(ThreatModel("linf", 0.0), 20))
    assert evaluate(model, digits_subset.head(20), transfer).robust == pytest.approx(clean)


@pytest.mark.slow
def test_stronger_attacks_do_not_raise_accuracy(trained_digits_model, digits_subset):
    results = run_suite(trained_digits_model, digits_subset.head(60), ["pgd20", "pgd100", "autoattack"], 0.05)
    pgd20, pgd100, aa = (results[k]["accuracy"] for k in ("pgd20", "pgd100", "autoattack"))
    noise = 2 / 60
    assert pgd100 <= pgd20 + noise
    assert aa <= pgd20 + 1e-9
    assert "PGD-20" in format_table(results) and "AA" in format_table(results)


def test_autoattack_adapter_passes_official_parameters(trained_digits_model):
    params = AutoAttackAdapter(trained_digits_model, "linf", 8 / 255, 10, seed=0).parameters()
    assert params["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert params["attack_version"] == "standard" and params["norm"] == "Linf"
    assert params["apgd_ce_iterations"] == 100 and params["apgd_ce_restarts"] == 1
    assert params["apgd_t_iterations"] == 100 and params["apgd_t_target_classes"] == 9
    assert params["fab_t_iterations"] == 100 and params["fab_t_target_classes"] == 9
    assert params["square_queries"] == 5000
    assert params["version"]  # the installed pyautoattack version is recorded
    assert AutoAttackAdapter(trained_digits_model, "l2", 0.5, 4).parameters()["apgd_t_target_classes"] == 3


def test_cw_reaches_the_analytic_margin_on_a_linear_model():
    torch.manual_seed(4)
    w, b = torch.randn(2, 16), torch.randn(2)
    model = linear_classifier(w, b)
    x = 0.3 + 0.4 * torch.rand(10, 1, 4, 4)
    y = torch.randint(0, 2, (10,))
    eps = 0.04
    cw = ATTACKS.build("cw", Context(model, ThreatModel("linf", eps), 2))
    assert cw.params["steps"] == 100 and cw.params["loss"] == "margin"
    x_adv = cw.attack(model, x, y)
    diff = w[1 - y] - w[y]
    expected = (diff * x.flatten(1)).sum(1) + b[1 - y] - b[y] + eps * diff.abs().sum(1)
    with torch.no_grad():
        assert torch.allclose(margin_loss(model(x_adv), y), expected, atol=1e-4)


def test_transfer_crafts_on_the_source_and_judges_with_the_target(trained_digits_model, digits_subset):
    import copy

    source = trained_digits_model
    target = copy.deepcopy(source)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.3 * p.std() * torch.randn_like(p))
    attack = PGDAttack(ThreatModel("linf", 0.1), 20)
    transfer = evaluate(target, digits_subset, TransferAttack(source, attack), seed=5).robust
    torch.manual_seed(5)  # evaluate() seeds its forked RNG with `seed`: the same random starts
    x_adv = attack(source, digits_subset.images, digits_subset.labels)
    with torch.no_grad():
        by_hand = (target(x_adv).argmax(1) == digits_subset.labels).float().mean().item()
    white_box = evaluate(target, digits_subset, attack, seed=5).robust
    assert transfer == pytest.approx(by_hand, abs=1e-6)
    assert transfer > white_box  # a black-box transfer is weaker than attacking the target itself


def independent_pgd(model, x, y, eps, alpha, steps):
    """A PGD written from the textbook, independent of atlens.attacks."""
    delta = torch.zeros_like(x).uniform_(-eps, eps)
    delta = (torch.clamp(x + delta, 0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        grad = torch.autograd.grad(loss, delta)[0]
        delta = torch.clamp(delta.detach() + alpha * grad.sign(), -eps, eps)
        delta = torch.clamp(x + delta, 0, 1) - x
    return (x + delta).detach()


def test_pgd20_agrees_with_an_independent_implementation(trained_digits_model, digits):
    model = trained_digits_model
    _, test = digits
    eps = 0.05
    ours = evaluate(model, test, PGDAttack(ThreatModel("linf", eps), 20)).robust
    torch.manual_seed(11)
    x_adv = independent_pgd(model, test.images, test.labels, eps, eps / 4, 20)
    with torch.no_grad():
        theirs = (model(x_adv).argmax(1) == test.labels).float().mean().item()
    assert abs(ours - theirs) <= 0.01


def test_eval_command_writes_report_and_curve(tmp_path, capsys):
    for name in ("a", "b"):
        train_run(tmp_path / name, **{"optim.epochs": 2, "seed": ord(name)})
    run = tmp_path / "a"
    assert main(["eval", str(run), "--attacks", f"clean,fgsm,pgd20,cw,transfer:{tmp_path / 'b'}",
                 "--examples", "32", "--both-directions", "--epsilon", "8/255", "--curve"]) == 0
    out = capsys.readouterr().out
    assert "Natural" in out and "PGD-20" in out
    report = json.loads((run / "eval-best.json").read_text())
    assert report["examples"] == 32 and report["threat"]["epsilon"] == pytest.approx(8 / 255)
    assert len(report["example_indices"]) == 32  # which examples: a class-balanced, seeded subset
    assert set(report["attacks"]) == {"clean", "fgsm", "pgd20", "cw", f"transfer:{tmp_path / 'b'}",
                                      f"transfer-to:{tmp_path / 'b'}"}
    assert report["attacks"]["pgd20"]["params"]["steps"] == 20
    curve = [p["accuracy"] for p in report["budget_curve"]]
    assert curve[0] >= curve[-1]
    assert (run / "eval-best-budget.png").is_file()
    assert main(["eval", str(run), "--attacks", "pgd7x"]) == 2
    assert "unknown attack" in capsys.readouterr().err
    # an earlier result is never replaced silently; a typo (8 for 8/255) is refused before any work
    written = (run / "eval-best.json").read_bytes()
    assert main(["eval", str(run), "--attacks", "clean", "--epsilon", "8"]) == 2
    assert "epsilon 8: expected > 0 and at most 1 for linf" in capsys.readouterr().err
    assert main(["eval", str(run), "--attacks", "clean", "--examples", "0"]) == 2
    assert "--examples must be a whole number >= 1" in capsys.readouterr().err
    assert main(["eval", str(run), "--attacks", "clean"]) == 2
    assert "already holds eval-best.json, eval-best-budget.png; pass --overwrite" in capsys.readouterr().err
    assert (run / "eval-best.json").read_bytes() == written
    assert main(["eval", str(run), "--attacks", "clean", "--examples", "8", "--overwrite"]) == 0
    kept = sorted(p.name for p in run.glob("eval-best*.replaced-*"))
    assert len(kept) == 2 and kept[0].startswith("eval-best-budget.replaced-") and kept[0].endswith(".png")
    assert (run / kept[1]).read_bytes() == written  # the earlier result, kept beside the new one
    assert json.loads((run / "eval-best.json").read_text())["examples"] == 8


def test_evaluation_stops_at_n_examples():
    data = ImageTensors(torch.rand(50, 1, 2, 2), torch.arange(50) % 2)
    model = linear_classifier(torch.randn(2, 4))
    assert evaluate(model, data.head(17), None).examples == 17


def exact_linear_robustness(weight, bias, x, y, eps):
    """Whether each example of a linear classifier is robust in the L∞ ball ∩ [0, 1] box, exactly: each
    pairwise margin (w_y − w_j)·x' + b_y − b_j is linear in x', so its minimum over the box-clipped ball
    takes, per coordinate, the lower end where the coefficient is positive and the upper end otherwise."""
    flat = x.flatten(1)
    low, high = (flat - eps).clamp(0, 1), (flat + eps).clamp(0, 1)
    robust = torch.ones(len(y), dtype=torch.bool)
    for j in range(weight.shape[0]):
        d = weight[y] - weight[j]  # [N, D]
        worst = torch.where(d > 0, low, high)
        margin = (d * worst).sum(1) + bias[y] - bias[j]
        robust &= (margin > 0) | (y == j)
    return robust


@pytest.mark.slow
def test_pgd_and_autoattack_reach_the_exact_robust_accuracy_of_a_linear_model():
    torch.manual_seed(0)
    weight, bias = torch.randn(4, 16), 0.1 * torch.randn(4)
    model = linear_classifier(weight, bias)
    x = torch.rand(48, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example correct when clean
    eps = 0.05
    exact = int(exact_linear_robustness(weight, bias, x, y, eps).sum()) / len(y)
    assert 0.2 < exact < 0.8  # the test has both kinds of examples
    data = ImageTensors(x, y)
    threat = ThreatModel("linf", eps)
    pgd_acc = evaluate(model, data, PGDAttack(threat, 20)).robust
    adapter = AutoAttackAdapter(model, "linf", eps, 4)
    aa_acc = evaluate(model, data, adapter, batch_size=48).robust
    assert abs(aa_acc - exact) * len(y) <= 1 + 1e-6  # AutoAttack reaches it (± one example)
    assert pgd_acc >= exact - 1e-6  # no attack finds what does not exist
    # crafted under bf16 autocast (every part, Square included, runs on the survivors), judged in fp32
    bf16 = evaluate_attacks(model, data, [NamedAttack("autoattack", adapter, {})], batch_size=48,
                            autoattack_precision="bf16-emulated")["autoattack"]
    assert bf16["precision"]["attack"] == "bf16"
    assert abs(bf16["accuracy"] - exact) * len(y) <= 2 + 1e-6  # bf16 rounding may move an example on the edge
