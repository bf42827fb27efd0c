import copy
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from atlens.analysis.lsc import lsc_groups
from atlens.config import config_from_dict
from atlens.models import build_model
from atlens.training.criteria import LabelSmoothing, SelfTeacherKD, TeacherFreeKD
from atlens.training.trainer import Trainer
from atlens.weightspace.averaging import EMA, ISWA, SWA
from atlens.weightspace.perturbation import AWP, RWP, perturbable_weights
from tests.conftest import synthetic_config


def make_trainer(tmp_path, name, **overrides):
    return Trainer(config_from_dict(synthetic_config(**overrides)), tmp_path / name)


def one_step(trainer, seed=0):
    x, y = next(iter(trainer.train_loader))
    torch.manual_seed(seed)
    trainer.train_step(x, y, 0.05, epoch=0)
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def same_weights(a, b, atol=0.0):
    return all(torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0) for k in a)


def small_model():
    torch.manual_seed(0)
    return build_model("cnn", 4, 1, 8, [0.5], [0.25], {"width": 4, "hidden": 8})


def test_kd_with_zero_weights_is_plain_pgd_at(tmp_path):
    teacher = make_trainer(tmp_path, "teacher", **{"optim.epochs": 1})
    teacher.start()
    teacher.fit()
    plain = one_step(make_trainer(tmp_path, "plain"))
    kd_cfg = {"name": "kd", "adv_teacher": str(tmp_path / "teacher"), "std_teacher": str(tmp_path / "teacher"),
              "lambda_adv": 0.0, "lambda_std": 0.0}
    kd = make_trainer(tmp_path, "kd", criterion=kd_cfg)
    kd.start()
    assert same_weights(plain, one_step(kd), atol=1e-6)
    kd_on = make_trainer(tmp_path, "kd_on", criterion={**kd_cfg, "lambda_adv": 0.5, "lambda_std": 0.25})
    kd_on.start()
    assert not same_weights(plain, one_step(kd_on), atol=1e-6)
    methods = json.loads((tmp_path / "kd_on" / "methods.json").read_text())
    assert methods["criterion"]["teachers"]["adv"] == str(tmp_path / "teacher")


def test_kd_weights_and_loss():
    kd = SelfTeacherKD(weights="reference", adv_teacher="a", std_teacher="s")
    assert (kd.lambda_adv, kd.lambda_std) == (0.6, 0.1)
    kd = SelfTeacherKD(adv_teacher="a")  # single-teacher form: λ2 = 0
    assert (kd.lambda_adv, kd.lambda_std) == (0.5, 0.0)
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    kd.teachers["adv"] = lambda inputs: teacher
    y = torch.randint(0, 5, (6,))
    t = 2.0
    expected = 0.5 * F.cross_entropy(student, y) + 0.5 * t * t * (
        F.softmax(teacher / t, 1) * (F.log_softmax(teacher / t, 1) - F.log_softmax(student / t, 1))).sum(1).mean()
    assert kd(student, y, None) == pytest.approx(expected.item(), abs=1e-5)


def test_label_smoothing_zero_is_cross_entropy_and_tfkd_is_finite():
    logits, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert LabelSmoothing(beta=0.0)(logits, y, None) == F.cross_entropy(logits, y)
    smoothed = LabelSmoothing(beta=0.3)(logits, y, None)
    target = torch.full((8, 4), 0.3 / 4).scatter_(1, y[:, None], 0.7 + 0.3 / 4)
    assert smoothed == pytest.approx(-(target * F.log_softmax(logits, 1)).sum(1).mean().item(), abs=1e-6)
    assert torch.isfinite(TeacherFreeKD()(logits, y, None))
    assert TeacherFreeKD(weight=0.0)(logits, y, None) == pytest.approx(F.cross_entropy(logits, y).item())


def test_rwp_with_zero_cmin_is_pgd_at(tmp_path):
    plain = one_step(make_trainer(tmp_path, "plain"))
    rwp = one_step(make_trainer(tmp_path, "rwp", perturbation={"name": "rwp", "c_min": 0.0}))
    assert same_weights(plain, rwp)


def algorithm_1_with_proxies(model, x, y, gamma, c_min, steps):
    """RWP written the way the reference runs it: a fresh proxy copy at w + v for every step, the
    whole batch in training mode, one SGD step on -mean(V·ℓ), the raw steps summed and rescaled
    globally to γ·‖w‖; stops when no example is at or below c_min (Algorithm 1)."""
    names = [n for n, p in model.named_parameters() if p.dim() > 1]
    weights = dict(model.named_parameters())
    total, scaled, ascents = None, {n: torch.zeros_like(weights[n]) for n in names}, 0
    for _ in range(steps):
        proxy = copy.deepcopy(model).train()
        params = dict(proxy.named_parameters())
        with torch.no_grad():
            for n in names:
                params[n].add_(scaled[n])
        before = {n: params[n].detach().clone() for n in names}
        losses = F.cross_entropy(proxy(x), y, reduction="none")
        mask = (losses <= c_min).float()
        if mask.sum() == 0:
            break
        optimizer = torch.optim.SGD(proxy.parameters(), lr=0.01)
        (-(losses * mask).mean()).backward()
        optimizer.step()
        step = {n: params[n].detach() - before[n] for n in names}
        total = step if total is None else {n: total[n] + step[n] for n in names}
        w_norm = torch.sqrt(sum((weights[n].detach() ** 2).sum() for n in names))
        d_norm = torch.sqrt(sum((total[n] ** 2).sum() for n in names))
        scaled = {n: gamma * w_norm / d_norm * total[n] for n in names}
        ascents += 1
    return [scaled[n] for n in names], ascents


@pytest.mark.parametrize("steps", [10, 2])
def test_rwp_is_algorithm_1_as_the_reference_runs_it(steps):
    model = small_model().train()
    torch.manual_seed(1)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 4, (32,))
    with torch.no_grad():
        c_min = F.cross_entropy(model(x), y, reduction="none").median().item() + 1e-4
    expected, expected_ascents = algorithm_1_with_proxies(model, x, y, 0.05, c_min, steps)
    buffers = [b.clone() for b in model.buffers()]
    rwp = RWP(gamma=0.05, c_min=c_min, steps=steps)
    rwp.perturb(model, x, y, epoch=0)
    assert 1 < expected_ascents <= steps
    assert rwp.epoch_stats()["rwp_mean_ascent_steps"] == expected_ascents
    # the proxy's step (w - lr·g) - w carries float32 cancellation of about 1e-7·‖w‖ / (lr·‖g‖)
    for got, want in zip(rwp.perturbation, expected, strict=True):
        assert ((got - want).norm() / want.norm()).item() < 1e-4
    assert all(torch.equal(b, saved) for b, saved in zip(model.buffers(), buffers))  # running stats untouched


@pytest.mark.parametrize("method", [AWP(gamma=0.02), AWP(gamma=0.02, scope="global"),
                                    RWP(gamma=0.02, c_min=100.0), RWP(gamma=0.02, c_min=100.0, scope="layer")])
def test_perturbation_size_scope_and_exact_restore(method):
    model = small_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 4, (16,))
    method.perturb(model, x, y, epoch=0)
    weights = perturbable_weights(model)
    v = method.perturbation
    assert len(v) == len(weights) == 5  # 3 convolutions, the hidden linear layer and the head
    originals = [before[name] for name, p in model.named_parameters() if any(p is w for w in weights)]
    if method.scope == "layer":
        for d, w in zip(v, originals):
            assert d.norm().item() == pytest.approx(method.gamma * w.norm().item(), rel=1e-4)
    else:
        total = torch.sqrt(sum((d**2).sum() for d in v))
        w_norm = torch.sqrt(sum((w**2).sum() for w in originals))
        assert total.item() == pytest.approx(method.gamma * w_norm.item(), rel=1e-4)
    state = model.state_dict()
    for name, value in state.items():  # only conv/linear weights moved; BN, biases and buffers did not
        moved = not torch.equal(value, before[name])
        is_weight = any(value.data_ptr() == w.data_ptr() for w in weights)
        assert moved == is_weight, name
    method.restore(model)
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)  # bitwise


def test_step_is_taken_at_perturbed_weights(tmp_path):
    trainer = make_trainer(tmp_path, "awp", perturbation={"name": "awp", "gamma": 0.05}, **{"optim.weight_decay": 0.0})
    x, y = next(iter(trainer.train_loader))
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    torch.manual_seed(0)
    trainer.train_step(x, y, 0.05)
    # replay by hand: craft at w, move to w + v, gradient there, SGD step, move back by v
    manual = make_trainer(tmp_path, "manual", **{"optim.weight_decay": 0.0})
    manual.model.load_state_dict(start)
    torch.manual_seed(0)
    batch = manual.objective.craft(manual.model, x, y)
    awp = AWP(gamma=0.05)
    awp.perturb(manual.model, batch.x_adv, y, 0)
    v = [d.clone() for d in awp.perturbation]
    loss = F.cross_entropy(manual.model(batch.x_adv), y)
    grads = torch.autograd.grad(loss, list(manual.model.parameters()))
    with torch.no_grad():
        for p, g in zip(manual.model.parameters(), grads):
            p.sub_(0.05 * g)
        for w, d in zip(perturbable_weights(manual.model), v):
            w.sub_(d)
    assert same_weights(trainer.model.state_dict(), manual.model.state_dict(), atol=1e-5)


@pytest.mark.parametrize("perturbation", [{"name": "awp", "gamma": 0.005}, {"name": "rwp", "gamma": 0.005}])
def test_trades_composes_with_weight_perturbation(tmp_path, perturbation):
    trainer = make_trainer(tmp_path, perturbation["name"], objective={"name": "trades"}, perturbation=perturbation,
                           **{"optim.epochs": 1})
    trainer.start()
    trainer.fit()
    row = trainer.run.read_metrics()[0]
    assert row["train_loss"] == pytest.approx(row["train_loss"])  # finite, not NaN
    assert len(row["lsc_hist"]) == 7 and sum(row["lsc_hist"]) == pytest.approx(1.0, abs=1e-3)
    if perturbation["name"] == "rwp":
        assert 0 <= row["lsc_below_cmin"] <= 1 and "rwp_mean_ascent_steps" in row


def test_lsc_groups_partition_the_losses():
    losses = torch.tensor([0.0, 0.49, 0.5, 1.2, 2.99, 3.0, 3.01, 9.0])
    assert lsc_groups(losses).tolist() == [0, 0, 1, 2, 5, 5, 6, 6]


def loader(images):
    return [(images[i:i + 8], None) for i in range(0, len(images), 8)]


def test_swa_is_the_mean_of_collected_weights_with_recomputed_batchnorm():
    model = small_model()
    swa = SWA(start=2)
    snapshots = []
    data = torch.rand(32, 1, 8, 8)
    for epoch in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        if epoch >= 2:
            snapshots.append({k: v.clone() for k, v in model.named_parameters()})
        swa.after_epoch(model, epoch, 10, [0.5], [(data, None)])
    averaged = swa.evaluated(model)
    for name, p in averaged.named_parameters():
        assert torch.allclose(p, torch.stack([s[name] for s in snapshots]).mean(0), atol=1e-6)
    bn = next(m for m in averaged.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        first_conv = next(m for m in averaged.modules() if isinstance(m, nn.Conv2d))
        expected = first_conv(averaged.normalize(data)).mean((0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)  # recomputed on the given data
    assert swa.start_epoch(200, [0.25, 0.75]) == 2 and SWA().start_epoch(200, [0.25, 0.75]) == 51


def test_iswa_restarts_sgd_from_the_average_and_ema_tracks():
    model = small_model()
    iswa = ISWA(start=1)
    data = [(torch.rand(8, 1, 8, 8), None)]
    iswa.after_epoch(model, 1, 10, [0.5], data)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    iswa.after_epoch(model, 2, 10, [0.5], data)
    for p, q in zip(model.parameters(), iswa.evaluated(model).parameters()):
        assert torch.equal(p, q)  # the model now holds the average
    model = small_model()
    ema = EMA(decay=0.5)
    first = [p.clone() for p in model.parameters()]
    ema.after_step(model, 1, 10, [0.5])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0)
    ema.after_step(model, 1, 10, [0.5])
    for p0, q in zip(first, ema.evaluated(model).parameters()):
        assert torch.allclose(q, p0 + 1.0)  # 0.5 · w0 + 0.5 · (w0 + 2)


def test_swa_run_checkpoints_and_resumes_the_average(tmp_path):
    cfg = synthetic_config(averaging={"name": "swa", "start": 0.5}, **{"optim.epochs": 4})
    full = Trainer(config_from_dict(cfg), tmp_path / "full")
    full.start()
    full.fit()
    rows = full.run.read_metrics()
    assert [r["evaluated_model"] for r in rows] == ["model", "swa", "swa", "swa"]
    cut = Trainer(config_from_dict(cfg), tmp_path / "cut")
    cut.hooks.append(lambda trainer, epoch, row: (_ for _ in ()).throw(KeyboardInterrupt) if epoch == 3 else None)
    cut.start()
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    resumed = Trainer(config_from_dict(cfg), tmp_path / "cut")
    resumed.resume()
    resumed.fit()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.run.read_metrics()]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_teachers_are_trained_first_when_chained(tmp_path):
    teacher_cfg = tmp_path / "teacher.yaml"
    teacher_cfg.write_text(yaml.safe_dump(synthetic_config(objective={"name": "standard"}, **{"optim.epochs": 1})))
    cfg = synthetic_config(criterion={"name": "kd", "std_teacher": {"config": str(teacher_cfg)},
                                      "lambda_std": 0.3}, **{"optim.epochs": 1})
    trainer = Trainer(config_from_dict(cfg), tmp_path / "student")
    trainer.start()
    assert (tmp_path / "student" / "teachers" / "std" / "summary.json").is_file()
    trainer.fit()
    methods = json.loads((tmp_path / "student" / "methods.json").read_text())
    assert methods["criterion"]["teachers"]["std"].endswith("teachers/std")
