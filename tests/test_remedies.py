import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from atlens.analysis.lsc import lsc_groups
from atlens.attacks import ThreatModel
from atlens.config import config_from_dict
from atlens.errors import ConfigError
from atlens.models import build_model
from atlens.runs import load_model
from atlens.training.build import build, check
from atlens.training.criteria import LabelSmoothing, SelfTeacherKD, TeacherFreeKD
from atlens.training.loop import Loop
from atlens.training.objectives import TRADES, TrainAttack
from atlens.weightspace.averaging import EMA, ISWA, SWA, first_averaged_epoch
from atlens.weightspace.perturbation import AWP, RWP, perturbable_weights
from tests.conftest import Interrupt, stop_after, synthetic_config, train_run


def make_loop(teachers=None, **overrides):
    """A loop with no callbacks over a synthetic run's parts: one step can be taken and inspected."""
    cfg = check(config_from_dict(synthetic_config(**overrides)))
    return Loop(build(cfg, torch.device("cpu"), teachers), [])


def first_batch(loop):
    loop.parts.loader.generator.manual_seed(0)
    return next(iter(loop.parts.loader))


def one_step(loop, seed=0):
    x, y = first_batch(loop)
    torch.manual_seed(seed)
    loop.step(x, y, 0.0)
    return {k: v.clone() for k, v in loop.model.state_dict().items()}


def same_weights(a, b, atol=0.0):
    return all(torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0) for k in a)


def small_model():
    torch.manual_seed(0)
    return build_model("cnn", 4, 1, 8, [0.5], [0.25], {"width": 4, "hidden": 8})


def test_kd_with_zero_weights_is_plain_pgd_at(tmp_path):
    train_run(tmp_path / "teacher", **{"optim.epochs": 1})
    teacher = str(tmp_path / "teacher")
    plain = one_step(make_loop())
    kd_cfg = {"name": "kd", "adv_teacher": teacher, "std_teacher": teacher, "lambda_adv": 0.0, "lambda_std": 0.0}
    assert same_weights(plain, one_step(make_loop(criterion=kd_cfg)), atol=1e-6)
    kd_on = {**kd_cfg, "lambda_adv": 0.5, "lambda_std": 0.25}
    teachers = {role: load_model(teacher) for role in ("adv", "std")}
    assert not same_weights(plain, one_step(make_loop(teachers, criterion=kd_on)), atol=1e-6)
    train_run(tmp_path / "kd_on", criterion=kd_on, **{"optim.epochs": 1})
    methods = json.loads((tmp_path / "kd_on" / "methods.json").read_text())
    assert methods["criterion"]["teachers"]["adv"] == teacher


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


def test_label_smoothing_zero_is_cross_entropy():
    logits, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert LabelSmoothing(beta=0.0)(logits, y, None) == F.cross_entropy(logits, y)
    smoothed = LabelSmoothing(beta=0.3)(logits, y, None)
    target = torch.full((8, 4), 0.3 / 4).scatter_(1, y[:, None], 0.7 + 0.3 / 4)
    assert smoothed == pytest.approx(-(target * F.log_softmax(logits, 1)).sum(1).mean().item(), abs=1e-6)


def test_tfkd_in_both_forms_matches_a_hand_computation():
    torch.manual_seed(3)
    logits, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    ce = F.cross_entropy(logits, y).item()

    def teacher(a):
        return torch.tensor([[a if j == label else (1 - a) / 4 for j in range(5)] for label in y.tolist()])

    def kl_terms(p, log_q):  # elementwise p·(log p − log q)
        return p * (p.log() - log_q)

    # paper: T²·KL(softmax(log p / T) ‖ softmax(s / T)), per example summed over classes, batch mean; a = 0.9
    t, p = 20.0, teacher(0.9)
    softened = F.softmax(p.log() / t, 1)
    paper = t**2 * kl_terms(softened, F.log_softmax(logits / t, 1)).sum(1).mean().item()
    assert TeacherFreeKD()(logits, y, None).item() == pytest.approx(0.9 * ce + 0.1 * paper, rel=1e-5)
    # Yuan et al.'s code: KLDivLoss()(log_softmax(s), softmax(p / T)) (mean over all entries) × 100; a = 0.99
    soft = F.softmax(teacher(0.99) / t, 1)
    code = 100 * kl_terms(soft, F.log_softmax(logits, 1)).mean().item()
    assert TeacherFreeKD(form="code")(logits, y, None).item() == pytest.approx(0.9 * ce + 0.1 * code, rel=1e-5)
    assert TeacherFreeKD(form="code").describe()["a"] == 0.99 and TeacherFreeKD().describe()["a"] == 0.9
    assert TeacherFreeKD(weight=0.0, form="code")(logits, y, None) == pytest.approx(ce)
    with pytest.raises(ConfigError, match="criterion.form: expected paper or code"):
        TeacherFreeKD(form="yuan")
    # what the docs say of the paper form: softening flattens the teacher (ten classes, T = 20: 0.9 becomes 0.12)
    ten = TeacherFreeKD().teacher(torch.zeros(1, 10), torch.tensor([0]))
    assert F.softmax(ten.log() / 20, 1)[0, 0].item() == pytest.approx(0.1216, abs=5e-4)


def test_rwp_with_zero_cmin_is_pgd_at(tmp_path):
    plain = one_step(make_loop())
    rwp = one_step(make_loop(perturbation={"name": "rwp", "c_min": 0.0}))
    assert same_weights(plain, rwp)


def cross_entropy_of(x, y):
    return lambda model: F.cross_entropy(model(x), y, reduction="none")


def trades_loss_of(x, x_adv, y, beta):
    """The TRADES objective per example, written as the AWP-TRADES reference's proxy loss:
    CE(f(x), y) + β·KL(softmax f(x) ‖ softmax f(x'))."""
    def loss(model):
        clean, adv = model(x), model(x_adv)
        kl = (F.softmax(clean, 1) * (F.log_softmax(clean, 1) - F.log_softmax(adv, 1))).sum(1)
        return F.cross_entropy(clean, y, reduction="none") + beta * kl
    return loss


def algorithm_1_with_proxies(model, loss_of, gamma, c_min, steps):
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
        losses = loss_of(proxy)
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
    expected, expected_ascents = algorithm_1_with_proxies(model, cross_entropy_of(x, y), 0.05, c_min, steps)
    buffers = [b.clone() for b in model.buffers()]
    rwp = RWP(gamma=0.05, c_min=c_min, steps=steps)
    rwp.perturb(model, cross_entropy_of(x, y), epoch=0)
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
    method.perturb(model, cross_entropy_of(x, y), epoch=0)
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


def test_step_is_taken_at_perturbed_weights():
    loop = make_loop(perturbation={"name": "awp", "gamma": 0.05}, **{"optim.weight_decay": 0.0})
    start = {k: v.clone() for k, v in loop.model.state_dict().items()}
    x, y = first_batch(loop)
    torch.manual_seed(0)
    loop.step(x, y, 0.0)
    # replay by hand: craft at w, move to w + v, gradient there, SGD step, move back by v
    manual = make_loop(**{"optim.weight_decay": 0.0})
    manual.model.load_state_dict(start)
    torch.manual_seed(0)
    batch = manual.parts.objective.craft(manual.model, x, y)
    awp = AWP(gamma=0.05)
    awp.perturb(manual.model, cross_entropy_of(batch.x_adv, y), 0)
    v = [d.clone() for d in awp.perturbation]
    loss = F.cross_entropy(manual.model(batch.x_adv), y)
    grads = torch.autograd.grad(loss, list(manual.model.parameters()))
    with torch.no_grad():
        for p, g in zip(manual.model.parameters(), grads):
            p.sub_(0.05 * g)
        for w, d in zip(perturbable_weights(manual.model), v):
            w.sub_(d)
    assert same_weights(loop.model.state_dict(), manual.model.state_dict(), atol=1e-5)


def awp_with_a_proxy(model, loss_of, gamma):
    """AWP as the reference runs it: a proxy copy in training mode, one SGD step on −mean(loss),
    d_l = proxy_l − w_l rescaled per layer to γ·‖w_l‖."""
    names = [n for n, p in model.named_parameters() if p.dim() > 1]
    proxy = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(proxy.parameters(), lr=0.01)
    (-loss_of(proxy).mean()).backward()
    optimizer.step()
    weights, moved = dict(model.named_parameters()), dict(proxy.named_parameters())
    diffs = {n: moved[n].detach() - weights[n].detach() for n in names}
    return [gamma * weights[n].detach().norm() / diffs[n].norm() * diffs[n] for n in names]


def trades_batch():
    model = small_model().train()
    torch.manual_seed(1)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 4, (32,))
    objective = TRADES(TrainAttack(ThreatModel("linf", 0.1), 3, None, True, None), beta=6.0)
    torch.manual_seed(2)
    return model, objective, objective.craft(model, x, y)


def test_awp_with_trades_ascends_the_trades_objective_as_the_reference():
    model, objective, batch = trades_batch()
    expected = awp_with_a_proxy(model, trades_loss_of(batch.x, batch.x_adv, batch.y, 6.0), 0.005)
    awp = AWP(gamma=0.005)
    awp.perturb(model, lambda m: objective.per_example_loss(m, batch), epoch=0)
    for got, want in zip(awp.perturbation, expected, strict=True):
        assert ((got - want).norm() / want.norm()).item() < 1e-5
    # and it is not the cross-entropy direction on x' that AWP used to ascend
    ce_direction = awp_with_a_proxy(model, cross_entropy_of(batch.x_adv, batch.y), 0.005)
    cosines = [F.cosine_similarity(a.flatten(), b.flatten(), 0).item() for a, b in zip(ce_direction, expected)]
    assert min(cosines) < 0.99


def test_rwp_with_trades_masks_and_ascends_the_trades_objective_as_the_reference():
    model, objective, batch = trades_batch()
    loss_of = trades_loss_of(batch.x, batch.x_adv, batch.y, 6.0)
    with torch.no_grad():
        c_min = loss_of(model).median().item() + 1e-4
    expected, ascents = algorithm_1_with_proxies(model, loss_of, 0.005, c_min, 10)
    rwp = RWP(gamma=0.005, c_min=c_min)
    rwp.perturb(model, lambda m: objective.per_example_loss(m, batch), epoch=0)
    assert ascents >= 1 and rwp.epoch_stats()["rwp_mean_ascent_steps"] == ascents
    for got, want in zip(rwp.perturbation, expected, strict=True):
        assert ((got - want).norm() / want.norm()).item() < 1e-4  # the proxy's float32 cancellation, as above


@pytest.mark.parametrize("perturbation", [{"name": "awp", "gamma": 0.005}, {"name": "rwp", "gamma": 0.005}])
def test_trades_composes_with_weight_perturbation(tmp_path, perturbation):
    run, _ = train_run(tmp_path / perturbation["name"], objective={"name": "trades"}, perturbation=perturbation,
                       **{"optim.epochs": 1})
    row = run.read_metrics()[0]
    assert math.isfinite(row["train_loss"])
    assert len(row["loss_hist"]) == 7 and sum(row["loss_hist"]) == pytest.approx(1.0, abs=1e-3)
    if perturbation["name"] == "rwp":
        assert 0 <= row["loss_below_cmin"] <= 1 and row["rwp_mean_ascent_steps"] >= 1


def test_lsc_groups_partition_the_losses():
    losses = torch.tensor([0.0, 0.49, 0.5, 1.2, 2.99, 3.0, 3.01, 9.0])
    assert lsc_groups(losses).tolist() == [0, 0, 1, 2, 5, 5, 6, 6]


class FakeLoop:
    """What averaging reads from the loop: the model, the completed epochs and the training split with the
    training loader's augmentation."""

    def __init__(self, model, images, crop_padding=0, flip=False):
        from types import SimpleNamespace

        from atlens.data import ImageTensors
        from atlens.training.distributed import Distributed

        self.model, self.epoch, self.device, self.dist = model, 0, torch.device("cpu"), Distributed()
        self.evaluated = model
        train = None if images is None else ImageTensors(images, torch.zeros(len(images), dtype=torch.long))
        self.train_data = train
        self.loader = SimpleNamespace(crop_padding=crop_padding, flip=flip, drop_last=False)
        self.seed, self.batch_size, self.batches = 0, 8, 4
        self.position = 0  # steps completed in the current epoch


def first_bn_mean(model, batches):
    """What BatchNorm's running mean becomes over ``batches`` (cumulative, as update_bn computes it)."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        return torch.cat([conv(model.normalize(x)) for x, _ in batches]).mean((0, 2, 3))


@pytest.mark.parametrize("bn_data", ["clean", "augmented"])
def test_swa_is_the_mean_of_collected_weights_with_recomputed_batchnorm(bn_data):
    from atlens.weightspace.averaging import batchnorm_batches

    model = small_model()
    swa = SWA(10, [0.5], start=1, bn_data=bn_data)  # the reference's `epoch >= 1` (0-based): from the second epoch
    snapshots = []
    loop = FakeLoop(model, torch.rand(32, 1, 8, 8), crop_padding=2, flip=True)
    for epoch in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        if epoch >= 2:
            snapshots.append({k: v.clone() for k, v in model.named_parameters()})
        loop.epoch = epoch
        swa.on_epoch_end(loop, {})
    averaged = loop.evaluated
    for name, p in averaged.named_parameters():
        assert torch.allclose(p, torch.stack([s[name] for s in snapshots]).mean(0), atol=1e-6)
    bn = next(m for m in averaged.modules() if isinstance(m, nn.BatchNorm2d))
    augmented, plain = list(batchnorm_batches(loop, True)), list(batchnorm_batches(loop, False))
    assert torch.equal(plain[0][0], loop.train_data.images[:8])  # plain: the split in order
    assert not torch.equal(torch.cat([x for x, _ in augmented]).sum(0), torch.cat([x for x, _ in plain]).sum(0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(augmented, batchnorm_batches(loop, True)))  # seeded
    expected = first_bn_mean(averaged, augmented if bn_data == "augmented" else plain)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)  # recomputed on the data asked for


def test_swa_starts_where_the_reference_does():
    # the reference averages when its 0-based epoch >= swa_start: swa_start 55 of 200 is the 56th epoch
    assert first_averaged_epoch(0.275, 200, [0.25, 0.75]) == 56
    assert first_averaged_epoch(55, 200, [0.25, 0.75]) == 56
    # by default: the first epoch trained at the decayed rate (decay boundary at 0-based epoch 50)
    assert first_averaged_epoch(None, 200, [0.25, 0.75]) == 51


def test_iswa_restarts_sgd_from_the_average_and_ema_tracks():
    model = small_model()
    iswa = ISWA(10, [0.5], start=0.05)  # 0-based index 0: from the first epoch
    loop = FakeLoop(model, torch.rand(8, 1, 8, 8))
    loop.epoch = 1
    iswa.on_epoch_end(loop, {})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    loop.epoch = 2
    iswa.on_epoch_end(loop, {})
    for p, q in zip(model.parameters(), loop.evaluated.parameters()):
        assert torch.equal(p, q)  # the model now holds the average
    model = small_model()
    ema = EMA(10, [0.5], decay=0.5)
    loop = FakeLoop(model, None)
    first = [p.clone() for p in model.parameters()]
    loop.position = 1
    ema.on_step_end(loop, None)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0)
    loop.position = 2
    ema.on_step_end(loop, None)
    for p0, q in zip(first, ema.averaged.module.parameters()):
        assert torch.allclose(q, p0 + 1.0)  # 0.5 · w0 + 0.5 · (w0 + 2)


def test_ema_warmup_ramp_and_copied_buffers_are_wang_et_als_weight_averaging():
    """ema_update(wa, model, global_step, decay_rate=τ, warmup_steps=W, dynamic_decay=True) of Wang et al.'s
    watrain.py: a copy while global_step < W, then decay min(τ, (1 + t)/(10 + t)), t = global_step − W, on the
    parameters; update_bn copies the live BatchNorm buffers into the average at the end of every epoch."""
    model = small_model()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # warm-up 0.25 of a 2-epoch run of 4 batches per epoch: W = 2 steps; τ = 0.6
    ema = EMA(2, [], decay=0.6, warmup=0.25, ramp=True, copy_buffers=True)
    assert [ema.decay_at(t, 4) for t in (1, 2, 3, 4, 5, 50)] == pytest.approx([0, 1 / 10, 2 / 11, 3 / 12, 4 / 13, 0.6])
    loop = FakeLoop(model, None)
    weights = []  # the model's weights after each step: step k adds k to every parameter
    expected = None
    for step in range(1, 9):
        loop.epoch, loop.position = (step - 1) // 4, (step - 1) % 4 + 1
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(step))
            bn.running_mean.add_(1.0)
        weights.append([p.clone() for p in model.parameters()])
        ema.on_step_end(loop, None)
        decay = 0.0 if step < 2 else min(0.6, (1 + step - 2) / (10 + step - 2))
        expected = weights[-1] if expected is None else [decay * e + (1 - decay) * w
                                                         for e, w in zip(expected, weights[-1])]
        for e, q in zip(expected, ema.averaged.module.parameters()):
            assert torch.allclose(q, e, atol=1e-5), step
        if step % 4 == 0:
            averaged_bn = next(m for m in ema.averaged.module.modules() if isinstance(m, nn.BatchNorm2d))
            assert not torch.equal(averaged_bn.running_mean, bn.running_mean)  # not averaged during the epoch
            loop.epoch = step // 4
            ema.on_epoch_end(loop, {})
            assert torch.equal(averaged_bn.running_mean, bn.running_mean)  # copied at its end
    # without the options: plain EMA, buffers averaged with the weights
    assert EMA(10, [], decay=0.9).decay_at(1, 4) == 0.9


def test_batchnorm_momentum_is_set_for_the_first_step_and_after():
    from atlens.training.callbacks import CALLBACKS

    model = small_model()
    callback = CALLBACKS.build("batchnorm_momentum", {"momentum": 0.01, "first": 1.0}, "callbacks[0]")
    loop = FakeLoop(model, None)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    callback.on_fit_start(loop)
    x = torch.rand(6, 1, 8, 8)
    model.train()
    model(x)  # momentum 1: the running statistics are the first batch's own
    first = norms[0].running_mean.clone()
    callback.on_step_end(loop, None)
    assert all(m.momentum == 0.01 for m in norms)
    model(x + 1)
    assert torch.allclose(norms[0].running_mean, 0.99 * first + 0.01 * model_bn_mean(model, x + 1), atol=1e-6)
    loop.epoch = 3  # a resumed run: the first-step momentum belongs to the run's first step only
    callback.on_fit_start(loop)
    assert all(m.momentum == 0.01 for m in norms)


def model_bn_mean(model, x):
    """The batch mean the first BatchNorm layer sees for ``x`` (train mode, buffers left as they were)."""
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    seen = {}
    handle = bn.register_forward_hook(lambda m, inputs, out: seen.setdefault("x", inputs[0].detach()))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model(x)
    handle.remove()
    model.load_state_dict(state)
    return seen["x"].mean((0, 2, 3))


def test_swa_run_checkpoints_and_resumes_the_average(tmp_path):
    overrides = {"averaging": {"name": "swa", "start": 0.25}, "optim.epochs": 4}
    full, _ = train_run(tmp_path / "full", **overrides)
    rows = full.read_metrics()
    assert [r["evaluated_model"] for r in rows] == ["model", "swa", "swa", "swa"]
    with pytest.raises(Interrupt):
        train_run(tmp_path / "cut", [stop_after(3)], **overrides)
    resumed, _ = train_run(tmp_path / "cut", **overrides)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.read_metrics()]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_teachers_are_trained_first_when_chained(tmp_path):
    teacher_cfg = tmp_path / "teacher.yaml"
    teacher_cfg.write_text(yaml.safe_dump(synthetic_config(objective={"name": "standard"}, **{"optim.epochs": 1})))
    cfg = {"criterion": {"name": "kd", "std_teacher": {"config": str(teacher_cfg)}, "lambda_std": 0.3},
           "optim.epochs": 1}
    train_run(tmp_path / "student", **cfg)
    assert (tmp_path / "student" / "teachers" / "std" / "summary.json").is_file()
    methods = json.loads((tmp_path / "student" / "methods.json").read_text())
    assert methods["criterion"]["teachers"]["std"].endswith("teachers/std")
