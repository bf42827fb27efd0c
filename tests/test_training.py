import copy
import json
import pickle

import pytest
import torch

import atlens
from atlens.config import config_from_dict
from atlens.errors import CheckpointError, ConfigError, NonFiniteLossError
from atlens.runs import load_checkpoint, save_checkpoint
from atlens.training.run import train_to_completion
from atlens.training.schedules import SCHEDULES
from atlens.training.summary import summarize, window_gap
from tests.conftest import Interrupt, stop_after, synthetic_config, train_run


def train(tmp_path, name, callbacks=(), **overrides):
    return train_run(tmp_path / name, callbacks, **overrides)


@pytest.fixture(scope="module")
def pgd_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    trainer, summary = train(tmp, "pgd", **{"optim.epochs": 6, "checkpoint": {"every": 3}})
    return trainer, summary


def test_short_pgd_at_run_beats_chance_and_writes_the_run_directory(pgd_run):
    run, summary = pgd_run
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    required = {"epoch", "lr", "train_loss", "train_robust_acc", "test_clean_acc", "test_robust_acc", "seconds"}
    assert required <= set(rows[0])
    assert summary["best_robust_acc"] > 0.25 + 0.2  # 4 classes: chance is 0.25
    machine = summary["machine"]  # what the wall times were measured on
    assert machine["isa"] == torch.backends.cpu.get_cpu_capability() and machine["threads"] == 2
    assert machine["cpu"] and machine["torch"] == torch.__version__
    assert rows[-1]["train_robust_acc"] > rows[0]["train_robust_acc"]
    for name in ("best", "last", "epoch-3", "epoch-6"):
        assert (run.checkpoints / f"{name}.pt").is_file()
    assert run.curves.is_file() and run.config.is_file()
    saved = json.loads(run.summary.read_text())
    assert saved["robust_gap"] == pytest.approx(saved["best_robust_acc"] - saved["last_robust_acc"])
    assert saved["selection"] == "test_robust_acc"
    assert not list(run.checkpoints.glob("*.tmp"))


def learning_rate(name, lr, epochs, epoch, milestones=(), gamma=0.1):
    return SCHEDULES.build(name, {}, "optim.schedule", lr=lr, epochs=epochs, milestones=list(milestones),
                           gamma=gamma)(epoch)


def test_piecewise_schedule_scales_with_run_length():
    lrs = [learning_rate("piecewise", 0.1, 20, e, [0.5, 0.75]) for e in range(20)]
    assert lrs[9] == 0.1 and lrs[10] == pytest.approx(0.01) and lrs[15] == pytest.approx(0.001)
    assert learning_rate("piecewise", 0.1, 200, 99.9, [0.5, 0.75]) == 0.1
    assert learning_rate("piecewise", 0.1, 200, 100, [0.5, 0.75]) == pytest.approx(0.01)
    assert learning_rate("cosine", 0.1, 10, 10) == pytest.approx(0.0)
    assert learning_rate("cosine", 0.1, 10, 5) == pytest.approx(0.05)
    assert learning_rate("constant", 0.1, 10, 7) == 0.1
    per_epoch = SCHEDULES.build("cosine", {"per_epoch": True}, "optim.schedule", lr=0.1, epochs=10)
    assert per_epoch(5.99) == per_epoch(5) == pytest.approx(0.05)
    assert per_epoch(5.5) != learning_rate("cosine", 0.1, 10, 5.5)


def test_a_linear_warm_up_scales_any_schedule_until_it_ends():
    from atlens.training.build import _schedule

    cfg = config_from_dict(synthetic_config(optim={"epochs": 20, "lr": 0.2, "warmup": 4, "schedule": "cosine"}))
    rate = _schedule(cfg)
    cosine = SCHEDULES.build("cosine", {}, "optim.schedule", lr=0.2, epochs=20)
    # step 0 at 0, half-way through the warm-up at half the cosine's rate, the cosine itself from epoch 4 on
    assert rate(0) == 0 and rate(2) == pytest.approx(0.5 * cosine(2))
    assert rate(1.5) == pytest.approx(1.5 / 4 * cosine(1.5))
    assert [rate(e) for e in (4, 7.25, 19)] == [cosine(e) for e in (4, 7.25, 19)]
    with pytest.raises(ConfigError, match="optim.warmup"):
        config_from_dict(synthetic_config(optim={"epochs": 4, "warmup": 4}))


@pytest.mark.parametrize(("epochs", "pct_start"), [(400, 0.025), (20, 0.3), (10, 0.05)])
def test_one_cycle_is_pytorchs_onecyclelr_stepped_once_per_epoch(epochs, pct_start):
    """Wang et al.'s cosinew: OneCycleLR(max_lr=lr, pct_start=0.025, total_steps=epochs), scheduler.step() after each
    epoch; every step of an epoch has the rate PyTorch's scheduler sets for it."""
    rate = SCHEDULES.build("one_cycle", {"pct_start": pct_start}, "optim.schedule", lr=0.2, epochs=epochs)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.2, pct_start=pct_start, total_steps=epochs)
    for epoch in range(epochs):
        expected = optimizer.param_groups[0]["lr"]
        assert [rate(epoch + i / 7) for i in range(7)] == [pytest.approx(expected, rel=1e-12)] * 7, epoch
        optimizer.step()
        if epoch < epochs - 1:
            reference.step()
    if pct_start * epochs >= 1:  # (a warm-up shorter than an epoch starts past the initial rate, in PyTorch too)
        assert rate(0) == pytest.approx(0.2 / 25) and max(rate(e) for e in range(epochs)) == pytest.approx(0.2)


def test_load_model_round_trips_checkpoints(pgd_run):
    run, summary = pgd_run
    model = atlens.load_model(run.path, "last")
    assert not model.training
    last = load_checkpoint(run.checkpoints / "last.pt")["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, last[name])
    best = atlens.load_model(run.path, "best")
    state = load_checkpoint(run.checkpoints / "best.pt")
    assert state["epoch"] == summary["best_epoch"]
    by_path = atlens.load_model(run.checkpoints / "epoch-3.pt")
    x = torch.rand(4, 1, 8, 8)
    assert best(x).shape == by_path(x).shape == (4, 4)
    with pytest.raises(CheckpointError, match="available: best, epoch-3, epoch-6, last"):
        atlens.load_model(run.path, "epoch-99")


def test_resume_after_interruption_equals_uninterrupted_run_bit_for_bit(tmp_path):
    overrides = {"data.val_split": 0.25, "averaging": {"name": "ema", "decay": 0.9}}
    full_run, full = train(tmp_path, "full", **overrides)
    with pytest.raises(Interrupt):
        train(tmp_path, "cut", [stop_after(3)], **overrides)
    cut = tmp_path / "cut"
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["epoch"] == 2
    # what a crash between writing epoch 3's metrics and its checkpoint leaves: a row past the checkpoint
    rows = (cut / "metrics.jsonl").read_text()
    (cut / "metrics.jsonl").write_text(rows + json.dumps({**json.loads(rows.splitlines()[-1]), "epoch": 3}) + "\n")
    run, summary = train(tmp_path, "cut", **overrides)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(run.read_metrics()) == strip(full_run.read_metrics())
    assert {k: v for k, v in summary.items() if k not in ("total_seconds", "history")} == \
        {k: v for k, v in full.items() if k not in ("total_seconds", "history")}
    # what the run went through: trained through epoch 3 (its checkpoint not written), resumed after epoch 2
    first, second = summary["history"]["segments"]
    assert (first["from_epoch"], first["to_epoch"], first["how"]) == (0, 3, "stopped by Interrupt")
    assert (second["from_epoch"], second["to_epoch"], second["how"]) == (2, 4, "finished")
    assert summary["history"]["interruptions"] == 1 and full["history"]["interruptions"] == 0
    assert first["machine"]["cpu"] and first["processes"] == 1 and second["seconds"] >= 0
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (tmp_path / "full", cut))
    for key in ("model", "training_model"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert summary["selection"] == "val_robust_acc"


def test_a_process_that_died_without_a_word_is_named_in_the_runs_history(tmp_path):
    """A SIGKILL leaves its segment open (no exit recorded); the process that continues the run marks it."""
    from atlens.runs.history import KILLED, begin_segment

    with pytest.raises(Interrupt):
        train(tmp_path, "run", [stop_after(2)], **{"optim.epochs": 3})
    begin_segment(tmp_path / "run", 1, {"cpu": "elsewhere"}, 1)  # what a process killed at once leaves
    _, summary = train(tmp_path, "run", **{"optim.epochs": 3})
    hows = [s["how"] for s in summary["history"]["segments"]]
    assert hows == ["stopped by Interrupt", KILLED, "finished"] and summary["history"]["interruptions"] == 2
    assert json.loads((tmp_path / "run" / "segments.json").read_text()) == summary["history"]["segments"]


@pytest.mark.slow
def test_wang_et_als_recipe_options_compose_resume_bit_for_bit_and_select_by_the_named_attack(tmp_path):
    """TRADES from a uniform start in frozen train mode, one-cycle schedule, weight decay off the BatchNorm
    parameters, EMA with warm-up, ramp and copied buffers, BatchNorm momentum 1 then 0.01, epochs of N examples, and
    the checkpoint selected by PGD-3 on the CW margin over a held-out split."""
    from atlens.attacks import threat_model
    from atlens.data import BatchLoader
    from atlens.evaluation import PGDAttack, evaluate
    from atlens.runs import RunDirectory, load_model, run_data

    overrides = {
        "data": {**synthetic_config()["data"], "val_split": 48, "epoch": 160},
        "attack": {"epsilon": 0.05, "steps": 3, "bn_mode": "frozen"},
        "objective": {"name": "trades", "beta": 5.0, "start": "uniform"},
        "criterion": {"name": "label_smoothing", "beta": 0.1},
        "averaging": {"name": "ema", "decay": 0.995, "warmup": 0.25, "ramp": True, "copy_buffers": True},
        "optim": {"epochs": 4, "lr": 0.05, "nesterov": True, "no_decay": ["norm"],
                  "schedule": {"name": "one_cycle", "pct_start": 0.5}},
        "eval": {"steps": 5, "examples": 128, "val_attack": "cw3"},
        "callbacks": [{"name": "batchnorm_momentum", "momentum": 0.01, "first": 1.0}],
    }
    cfg = config_from_dict(synthetic_config(**overrides))  # (its own callbacks: a key train_run would take)

    def fit(name, callbacks=()):
        summary = train_to_completion(cfg, tmp_path / name, callbacks=callbacks, log=lambda message: None)
        return RunDirectory(tmp_path / name), summary

    full_run, summary = fit("full")
    assert len(BatchLoader(run_data(cfg).train, 64, epoch_examples=160)) == 3
    with pytest.raises(Interrupt):
        fit("cut", [stop_after(3)])
    run, _ = fit("cut")
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full_run.read_metrics()]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in run.read_metrics()] == strip
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (tmp_path / "full", tmp_path / "cut"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the best checkpoint is the one of highest validation accuracy under cw3, which is what the row records
    val = run_data(cfg).val.evaluation_subset(128, cfg.seed)
    best = load_model(full_run.path, "best")
    rows = full_run.read_metrics()
    assert summary["selection"] == "val_robust_acc" and summary["best_epoch"] == max(
        rows, key=lambda r: r["val_robust_acc"])["epoch"]
    cw3 = PGDAttack(threat_model(bounds=(0.0, 1.0), base=cfg.attack), 3, loss="margin")
    assert evaluate(best, val, cw3, 256, seed=cfg.seed).robust == rows[summary["best_epoch"] - 1]["val_robust_acc"]
    methods = json.loads((full_run.path / "methods.json").read_text())
    assert methods["objective"]["start"] == "uniform" and methods["objective"]["crafting_bn_mode"] == "frozen"
    assert methods["averaging"]["ramp"] is True and methods["schedule"]["name"] == "one_cycle"


def test_a_finished_run_is_returned_and_a_new_run_never_overwrites_one(pgd_run, capsys):
    run, summary = pgd_run
    cfg = config_from_dict(synthetic_config(**{"optim.epochs": 6, "checkpoint": {"every": 3}}))
    assert train_to_completion(cfg, run.path) == summary
    assert "already complete" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="already holds a run"):
        train_to_completion(cfg, run.path, resume=False)


def test_same_seed_same_run(tmp_path):
    _, a = train(tmp_path, "a", **{"optim.epochs": 2})
    _, b = train(tmp_path, "b", **{"optim.epochs": 2})
    timing = ("total_seconds", "history")  # (when and how long each ran)
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}


def test_every_objective_trains(tmp_path):
    for name in ("standard", "trades", "fast_at", "mart"):
        run, summary = train(tmp_path, name, **{"objective": {"name": name}, "optim.epochs": 3})
        assert summary["best_clean_acc"] > 0.3
        rows = run.read_metrics()
        # fast AT is watched for catastrophic overfitting through test FGSM accuracy
        assert ("test_fgsm_acc" in rows[-1]) == (name == "fast_at")
        assert ("catastrophic_overfitting_epoch" in summary) == (name == "fast_at")
        # a standard-trained model (a KD teacher) is selected by clean accuracy
        assert summary["selection"] == ("test_clean_acc" if name == "standard" else "test_robust_acc")


def test_catastrophic_overfitting_is_flagged_in_the_metrics_and_the_console(tmp_path, capsys):
    from atlens.hooks import Callback
    from atlens.runs import RunDirectory
    from atlens.training.build import build, check
    from atlens.training.loop import Loop

    class CollapsingTrace(Callback):  # the measured accuracies replaced by a trace that collapses at epoch 3
        phase = "signals"  # after the evaluation, before the watch (listed first within the phase)

        def on_epoch_end(self, loop, row):
            row["test_robust_acc"], row["test_fgsm_acc"] = {1: (0.4, 0.5), 2: (0.45, 0.55), 3: (0.02, 0.9)}[loop.epoch]

    cfg = check(config_from_dict(synthetic_config(**{"objective": {"name": "fast_at"}, "optim.epochs": 3})))
    run = RunDirectory(tmp_path / "co")
    run.path.mkdir()
    summary = Loop(build(cfg, torch.device("cpu"), run=run, extra=[CollapsingTrace()])).fit()
    rows = run.read_metrics()
    assert [r.get("catastrophic_overfitting", False) for r in rows] == [False, False, True]
    assert summary["catastrophic_overfitting_epoch"] == 3
    assert "catastrophic overfitting at epoch 3" in capsys.readouterr().out


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(NonFiniteLossError, match="lower optim.lr.*no checkpoint has been written yet"):
        train(tmp_path, "nan", **{"optim.lr": 1e30, "optim.epochs": 2})


def test_checkpoints_never_unpickle_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "atlens-checkpoint-2", "x": Payload()}))
    with pytest.raises(CheckpointError, match="never runs code"):
        load_checkpoint(evil)


def test_older_checkpoints_are_refused_for_resuming_with_a_clear_message(tmp_path, pgd_run):
    run, _ = pgd_run
    state = load_checkpoint(run.checkpoints / "last.pt")
    torch.save({**state, "format": "atlens-checkpoint-1"}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="older atlens.*cannot be resumed"):
        load_checkpoint(tmp_path / "old.pt")
    assert atlens.load_model(tmp_path / "old.pt")(torch.rand(2, 1, 8, 8)).shape == (2, 4)  # weights still load


def test_checkpoint_save_is_atomic_and_mismatch_is_explained(tmp_path, pgd_run):
    path = tmp_path / "c.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)
    assert load_checkpoint(path)["model"]["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    run, _ = pgd_run
    state = load_checkpoint(run.checkpoints / "last.pt")
    state["model"].pop("head.bias")
    state["model"]["head.weight"] = torch.zeros(3, 3)
    save_checkpoint(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"only in the model: head.bias; shapes differ \(weights vs model\): "
                                              r"head.weight \(3, 3\) vs \(4, 16\)"):
        atlens.load_model(tmp_path / "broken.pt")


def test_summary_gap_and_selection():
    rows = [{"epoch": i, "train_robust_acc": 0.1 * i, "test_robust_acc": r, "test_clean_acc": 0.5,
             "val_robust_acc": v, "seconds": 1} for i, (r, v) in enumerate([(0.2, 0.3), (0.4, 0.5), (0.3, 0.4)], 1)]
    s = summarize(rows, "val_robust_acc")
    assert s["best_epoch"] == 2 and s["robust_gap"] == pytest.approx(0.1) and s["last_robust_acc"] == 0.3


def test_tensorboard_logger_callback_writes_the_epoch_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = train(tmp_path, "tb", **{"optim.epochs": 2, "runtime": {"progress": False, "tensorboard": True}})
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("test_robust_acc")] == [1, 2]
    assert events.Scalars("train_loss")[-1].value == pytest.approx(run.read_metrics()[-1]["train_loss"], rel=1e-6)


def test_a_tiny_last_batch_is_noted_and_drop_last_needs_one_full_batch(tmp_path):
    messages = []
    cfg = config_from_dict(synthetic_config(**{"optim.epochs": 1, "data.train_size": 260, "eval.steps": 1}))
    train_to_completion(cfg, tmp_path / "short", log=messages.append)
    assert any("last batch of 4" in m and "data.drop_last" in m for m in messages)
    cfg = config_from_dict(synthetic_config(**{"data.batch_size": 512, "data.drop_last": True}))
    with pytest.raises(ConfigError, match="data.drop_last.*no full batch"):
        train_to_completion(cfg, tmp_path / "none", log=messages.append)


def test_a_last_batch_smaller_than_the_number_of_processes_is_refused_before_training():
    """257 examples in batches of 64 leave a last batch of 1: a second process would receive none of it."""
    from atlens.training.build import build, check

    def parts(world, **data):
        cfg = check(config_from_dict(synthetic_config(**{f"data.{k}": v for k, v in data.items()})))
        return build(cfg, torch.device("cpu"), rank=0, world=world)

    with pytest.raises(ConfigError, match="smallest batch of an epoch holds 1 .* than the 2 processes.*drop_last"):
        parts(2, train_size=257)
    with pytest.raises(ConfigError, match="holds 2 .* fewer than the 3 processes"):
        parts(3, train_size=258)
    assert len(parts(2, train_size=258).loader) == 5  # a last batch of 2: one example each
    assert len(parts(2, train_size=257, drop_last=True).loader) == 4
    assert len(parts(1, train_size=257).loader) == 5  # one process trains on it as it is


def test_global_batchnorm_conversion_keeps_every_weight_and_statistic_and_alone_is_batchnorm():
    """runtime.sync_batchnorm on a device SyncBatchNorm does not run on: every BatchNorm layer becomes a
    GlobalBatchNorm with the same weights and running statistics; in one process (and in eval mode) it computes
    what BatchNorm computes. (Over ranks it normalises the global batch: tests/test_distributed.py.)"""
    from atlens.models import MODELS
    from atlens.training.distributed import GlobalBatchNorm, global_batchnorm

    torch.manual_seed(0)
    model = MODELS.build("cnn", {"width": 4, "hidden": 8}, "model", num_classes=3, channels=1, image_size=8,
                         mean=[0.5], std=[0.25])
    x = torch.rand(6, 1, 8, 8)
    model.train()
    model(x)  # running statistics away from their initial values
    reference = copy.deepcopy(model)
    converted = global_batchnorm(model)
    layers = [m for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(layers) == 4 and all(type(m) is GlobalBatchNorm for m in layers)
    for (name, value), (_, before) in zip(converted.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(value, before), name
    for training in (True, False):
        converted.train(training), reference.train(training)
        assert torch.allclose(converted(x), reference(x), atol=1e-6)
    for (name, value), (_, before) in zip(converted.state_dict().items(), reference.state_dict().items()):
        assert torch.allclose(value.double(), before.double()), name  # the same running statistics after a step


def test_window_gap_compares_the_last_tenth_of_epochs_with_the_best_window():
    # 40 epochs evaluated every 2
    accuracy = [0.1, 0.5, 0.6, 0.2, 0.7, 0.4, 0.3, 0.2, 0.3, 0.3, 0.1, 0.2, 0.2, 0.3, 0.2, 0.1, 0.2, 0.1, 0.2, 0.0]
    evaluated = [{"epoch": 2 * (i + 1), "test_robust_acc": a} for i, a in enumerate(accuracy)]
    gap = window_gap(evaluated)
    assert gap["window_evaluations"] == 2  # epochs 38 and 40 lie in the last tenth of 40
    assert gap["best_window_epochs"] == [4, 6]  # 0.55, tied with epochs 10-12 (0.7, 0.4): the earliest wins
    assert gap["best_window_robust_acc"] == pytest.approx(0.55) and gap["last_window_robust_acc"] == pytest.approx(0.1)
    assert gap["window_robust_gap"] == pytest.approx(0.45)
    single = window_gap(evaluated[:5])  # epochs 2-10: only epoch 10 lies in the last tenth
    assert single["window_evaluations"] == 1 and single["best_window_robust_acc"] == 0.7


def test_training_announces_its_remaining_time_once_an_evaluation_period_is_timed(tmp_path, capsys):
    train_run(tmp_path / "run", **{"optim.epochs": 4, "eval": {"steps": 1, "every": 2},
                                   "runtime": {"progress": True, "threads": 2}})
    err = capsys.readouterr().err
    assert err.count("estimated time: about") == 1
    assert "for the 2 remaining epochs" in err  # after epochs 1 and 2 (one training-only, one evaluated)


def test_no_decay_exempts_normalisation_parameters_and_biases_from_weight_decay():
    from torch import nn

    from atlens.training.optimizers import OPTIMIZERS

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LayerNorm(8), nn.Linear(8, 3))
    conv, bn, _, ln, fc = model
    sgd = OPTIMIZERS.build("sgd", {"weight_decay": 0.1, "no_decay": ["norm", "bias"]}, "optim", model=model, lr=0.5)
    decayed, exempt = sgd.param_groups
    assert {id(p) for p in decayed["params"]} == {id(conv.weight), id(fc.weight)} and decayed["weight_decay"] == 0.1
    assert {id(p) for p in exempt["params"]} == {id(p) for p in (conv.bias, bn.weight, bn.bias, ln.weight, ln.bias,
                                                                  fc.bias)}
    assert exempt["weight_decay"] == 0.0
    only_norm = OPTIMIZERS.build("sgd", {"no_decay": ["norm"]}, "optim", model=model, lr=0.5).param_groups
    assert len(only_norm[1]["params"]) == 4 and len(only_norm[0]["params"]) == 4  # conv/fc weight and bias
    assert len(OPTIMIZERS.build("sgd", {}, "optim", model=model, lr=0.5).param_groups) == 1  # the default: all decay
    # one SGD step by hand: w <- w - lr * (grad + wd * w) for decayed weights, w - lr * grad for the exempt ones
    x = torch.randn(4, 1, 4, 4)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    sgd = OPTIMIZERS.build("sgd", {"weight_decay": 0.1, "no_decay": ["norm", "bias"], "momentum": 0.0}, "optim",
                           model=model, lr=0.5)
    model(x).sum().backward()
    grads = {id(p): p.grad.clone() for p in model.parameters()}
    sgd.step()
    assert torch.allclose(fc.weight, before[id(fc.weight)] - 0.5 * (grads[id(fc.weight)] + 0.1 * before[id(fc.weight)]))
    assert torch.allclose(bn.weight, before[id(bn.weight)] - 0.5 * grads[id(bn.weight)])


def test_adamw_from_the_config_trains_and_is_recorded(tmp_path):
    run, summary = train_run(tmp_path / "run", optim={"name": "adamw", "lr": 0.003, "epochs": 2, "weight_decay": 0.01,
                                                      "no_decay": ["norm", "bias"], "schedule": "cosine"})
    methods = json.loads((run.path / "methods.json").read_text())
    assert methods["optimizer"] == {"name": "adamw", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                                    "no_decay": ["norm", "bias"]}
    assert methods["schedule"] == {"name": "cosine", "per_epoch": False}
    state = torch.load(run.checkpoints / "last.pt", weights_only=True)
    assert "exp_avg_sq" in next(iter(state["optimizer"]["state"].values()))  # Adam's moments, resumable
    assert summary["best_clean_acc"] > 0.4


def test_a_run_too_short_for_its_schedule_says_so_at_the_start(tmp_path):
    from atlens.training.build import schedule_notes

    notes = schedule_notes(config_from_dict({"optim": {"epochs": 1}}))
    assert notes == ["optim.milestones 0.5, 0.75 of a 1-epoch run fall at epochs 0, 1: a decay before the first step; "
                     "milestones for this length (or a longer run) keep the schedule's shape",
                     "the learning rate is 0.01 (optim.lr 0.1) already in epoch 1, before the first evaluation "
                     "(epoch 1): a short run trains at the decayed rate"]
    assert "two decays on one epoch" in schedule_notes(config_from_dict({"optim": {"epochs": 3}}))[0]
    assert schedule_notes(config_from_dict({"optim": {"epochs": 200}})) == []
    assert schedule_notes(config_from_dict({"optim": {"epochs": 1, "schedule": "cosine"}})) == []
    lines = []
    train_to_completion(config_from_dict(synthetic_config(**{"optim.epochs": 1})), tmp_path / "run", log=lines.append)
    assert any(line.startswith("note: optim.milestones 0.5, 0.75 of a 1-epoch run") for line in lines)
