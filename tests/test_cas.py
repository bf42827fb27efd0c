import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atlens.analysis import AttributionAccumulator, cas_score, compute_cas, cosine_matrix, instance_matrix
from atlens.attacks import ThreatModel
from atlens.cli.main import main
from atlens.data import ImageTensors
from atlens.errors import ModelContractError
from atlens.evaluation import PGDAttack
from atlens.report.tables import cas_table
from tests.conftest import linear_classifier, train_run

W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
FEATURES = torch.tensor([[1.0, 1.0], [3.0, 1.0], [2.0, 4.0], [1.0, 2.0]])
LABELS = torch.tensor([0, 0, 1, 2])


def hand_built():
    """features(x) = x (2-d), head = W: A^0 = (2, 0), A^1 = (0, 4), A^2 = (1, 2)."""
    return linear_classifier(W), ImageTensors(FEATURES.view(4, 1, 1, 2), LABELS)


def test_matrix_and_cas_equal_hand_computed_values():
    model, data = hand_built()
    result = compute_cas(model, data, ["a", "b", "c"], attack=None)
    r5 = 1 / math.sqrt(5)
    expected = torch.tensor([[1, 0, r5], [0, 1, 2 * r5], [r5, 2 * r5, 1]])
    assert torch.allclose(torch.tensor(result.matrix), expected, atol=1e-6)
    assert result.cas == pytest.approx(2 * (0 + r5 + 2 * r5), abs=1e-5)
    assert result.clean_acc == pytest.approx(0.25)  # class c has the largest logit for every example


def test_cas_is_invariant_to_example_order_and_class_vector_scale():
    model, data = hand_built()
    order = torch.tensor([3, 1, 2, 0])
    permuted = ImageTensors(data.images[order], data.labels[order])
    a = compute_cas(model, data, list("abc"), None, batch_size=1)
    assert a.robust_acc is None and a.clean_acc == pytest.approx(0.25)
    b = compute_cas(model, permuted, list("abc"), None, batch_size=3)
    assert torch.allclose(torch.tensor(a.matrix), torch.tensor(b.matrix), atol=1e-6)
    vectors = torch.randn(5, 8)
    scaled = vectors.clone()
    scaled[2] *= 7.5
    assert cas_score(cosine_matrix(vectors)) == pytest.approx(cas_score(cosine_matrix(scaled)), abs=1e-5)


def test_cas_range_is_zero_to_k_times_k_minus_one():
    k = 6
    assert cas_score(cosine_matrix(torch.eye(k))) == 0
    assert cas_score(cosine_matrix(torch.ones(k, 4))) == pytest.approx(k * (k - 1))
    assert cas_score(cosine_matrix(torch.cat([torch.eye(3), -torch.eye(3)]))) == 0  # negatives don't count
    for seed in range(5):
        torch.manual_seed(seed)
        assert 0 <= cas_score(cosine_matrix(torch.randn(k, 3))) <= k * (k - 1)


def test_streaming_equals_all_in_memory():
    torch.manual_seed(0)
    model = linear_classifier(torch.randn(4, 12))
    data = ImageTensors(torch.rand(50, 3, 2, 2), torch.arange(50) % 4)
    streamed = AttributionAccumulator(model, 4)
    for idx in torch.arange(50).split(7):
        streamed.update(model.features(data.images[idx]), data.labels[idx])
    attributions = model.features(data.images) * model.head.weight[data.labels]
    means = torch.stack([attributions[data.labels == c].mean(0) for c in range(4)])
    assert torch.allclose(streamed.class_vectors(), means.detach(), atol=1e-6)
    assert torch.allclose(streamed.matrix(), F.cosine_similarity(means[:, None], means[None], dim=2).detach(),
                          atol=1e-5)


def test_adversarial_matrix_uses_the_attacked_inputs():
    torch.manual_seed(1)
    model = linear_classifier(torch.randn(3, 12))
    data = ImageTensors(torch.rand(30, 3, 2, 2), torch.arange(30) % 3)
    attack = PGDAttack(ThreatModel("linf", 0.1), steps=5)
    result = compute_cas(model, data, list("abc"), attack, batch_size=64, seed=3)
    torch.manual_seed(3)
    x_adv = attack(model, data.images, data.labels)
    acc = AttributionAccumulator(model, 3)
    acc.update(model.features(x_adv), data.labels)
    assert torch.allclose(torch.tensor(result.matrix), acc.matrix(), atol=1e-6)
    assert result.attack["steps"] == 5 and result.epsilon == 0.1
    clean = compute_cas(model, data, list("abc"), None)
    assert not torch.allclose(torch.tensor(clean.matrix), acc.matrix(), atol=1e-3)


def test_instance_matrix_in_chunks_equals_brute_force():
    torch.manual_seed(2)
    vectors, labels = torch.randn(37, 5), torch.arange(37) % 3
    chunked = instance_matrix(vectors, labels, 3, chunk=4)
    unit = F.normalize(vectors, dim=1)
    brute = torch.zeros(3, 3)
    for i in range(3):
        for j in range(3):
            sims = unit[labels == i] @ unit[labels == j].T
            if i == j:
                sims.fill_diagonal_(-float("inf"))
            brute[i, j] = sims.amax(1).mean()
    assert torch.allclose(chunked, brute, atol=1e-6)
    assert not torch.allclose(chunked, chunked.T)  # not symmetric in general


def test_models_without_the_contract_are_refused():
    data = ImageTensors(torch.rand(4, 1, 1, 2), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ModelContractError, match="features"):
        compute_cas(nn.Sequential(nn.Flatten(), nn.Linear(2, 2)), data, ["a", "b"], None)


def test_cas_tracked_during_training_and_cli(tmp_path, capsys):
    run, summary = train_run(tmp_path / "run", **{"analysis": {"cas_every": 2}, "optim.epochs": 4,
                                                  "checkpoint": {"every": 2}})
    rows = run.read_metrics()
    assert [r["cas"] is not None for r in rows] == [False, True, False, True]
    assert 0 <= rows[1]["cas"] <= 12 and rows[1]["cas_attack"] == "pgd20"  # the paper's attack by default
    assert summary["cas_attack"]["steps"] == 20
    table = cas_table(summary, rows)  # the CAS paper's Table 1 rows, as the report shows them
    assert [r["when"] for r in table] == ["epoch 10", "best", "last"]
    assert table[0]["cas"] is None and table[2]["cas"] == summary["cas_last"] and table[2]["epoch"] == 4
    assert summary["delta_cas"] == pytest.approx(summary["cas_best"] - summary["cas_last"])
    for name in ("cas-best.json", "cas-last.json", "cas-best.png", "cas-last.png"):
        assert (run.analysis / name).is_file()
    # best at the last epoch: one computation serves both, and no all-zero difference map is drawn
    same = summary["cas_best_epoch"] == summary["cas_last_epoch"]
    assert (run.analysis / "cas-best-minus-last.png").is_file() != same
    assert same == (summary["cas_best"] == summary["cas_last"])
    last = json.loads((run.analysis / "cas-last.json").read_text())
    assert last["cas"] == pytest.approx(rows[-1]["cas"], abs=1e-4)  # same attack, same subset, same seed

    training = {p.name: p.read_bytes() for p in run.analysis.iterdir()}
    assert main(["cas", str(run.path), "--checkpoint", "epoch-2", "--compare", "last", "--instance",
                 "--examples", "64"]) == 0  # named by its attack and examples: training's matrices stay as they are
    assert "ΔCAS (epoch-2 − last)" in capsys.readouterr().out
    assert all((run.analysis / name).read_bytes() == content for name, content in training.items())
    saved = json.loads((run.analysis / "cas-epoch-2-pgd20-n64.json").read_text())
    assert {"cas", "matrix", "classes", "epsilon", "attack", "examples", "icas", "instance_matrix"} <= set(saved)
    assert saved["examples"] == 64 and saved["attack"]["steps"] == 20 and len(saved["example_indices"]) == 64
    assert (run.analysis / "icas-epoch-2-pgd20-n64.png").is_file()
    assert (run.analysis / "cas-epoch-2-pgd20-n64-minus-last-pgd20-n64.json").is_file()
    assert main(["cas", str(run.path), "--checkpoint", "last", "--clean", "--examples", "32"]) == 0
    assert json.loads((run.analysis / "cas-last-clean-n32.json").read_text())["attack"] is None
    # another budget than training's (0.05) is a study of its own, honoured and named by it
    assert main(["cas", str(run.path), "--checkpoint", "last", "--epsilon", "0.02", "--examples", "32"]) == 0
    other = json.loads((run.analysis / "cas-last-pgd20-linf-eps0.02-n32.json").read_text())
    assert other["epsilon"] == 0.02 and other["attack"]["epsilon"] == 0.02
    from atlens.report import write_report

    page = write_report([run.path]).read_text()
    assert "CAS results added by atlens cas" in page and "epoch-2-pgd20-n64" in page and "last-clean-n32" in page
    study = page.split("CAS results added by atlens cas")[1]
    assert "epoch-2-pgd20-n64-minus" not in study  # difference maps are not results of their own


def test_cas_can_ride_on_the_evaluation_attack(tmp_path):
    from atlens.attacks import threat_model
    from atlens.config import load_config
    from atlens.runs import load_model, run_test_data

    run, _ = train_run(tmp_path / "run", **{"analysis": {"cas_every": 1, "cas_attack": "eval"}, "optim.epochs": 1})
    row = run.read_metrics()[0]
    assert row["cas_attack"] == "pgd5"  # the synthetic config's eval.steps
    # the value is CAS of the evaluation's own PGD-5 examples: a separate PGD-5 pass on the same subset agrees
    cfg = load_config(run.config)
    data, info, _ = run_test_data(cfg, cfg.eval.examples)
    attack = PGDAttack(threat_model(bounds=info.bounds, base=cfg.attack), 5)
    again = compute_cas(load_model(run.path, "last"), data, info.classes, attack, seed=cfg.seed)
    assert row["cas"] == pytest.approx(again.cas, abs=1e-4)
    assert row["test_robust_acc"] == pytest.approx(again.robust_acc)
