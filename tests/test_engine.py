"""The training engine's promises: no hidden state, no per-step host synchronisation, one builder, one parser
of attack names, and failures that say what to do."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import atlens
from atlens.attacks import DEFAULT_EPSILON, threat_model
from atlens.config import config_from_dict
from atlens.errors import ConfigError
from atlens.hooks import Callback, in_phase_order
from atlens.models import forward_with_features
from atlens.registry import Registry
from atlens.training.build import build, check
from atlens.training.loop import Loop
from tests.conftest import linear_classifier, synthetic_config, train_run

ROOT = Path(__file__).resolve().parent.parent


def rows_without_time(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


class DrawsRandomNumbers(Callback):
    """A callback that draws from torch's global generator after every step and epoch."""

    def on_step_end(self, loop, out):
        torch.rand(1000)

    def on_epoch_end(self, loop, row):
        torch.randn(10)


def test_a_callbacks_random_draws_shift_no_training_stream(tmp_path):
    overrides = {"optim.epochs": 2}
    train_run(tmp_path / "plain", **overrides)
    train_run(tmp_path / "drawing", callbacks=[DrawsRandomNumbers()], **overrides)
    assert rows_without_time(tmp_path / "plain") == rows_without_time(tmp_path / "drawing")


def test_the_host_sync_guard_catches_what_would_wait_for_a_cuda_device():
    from tests.sync_guard import HostSync, HostSyncGuard

    x = torch.rand(6)
    waits = {"bool(tensor)": lambda: bool(x.sum() > 0), "item": lambda: x.sum().item(), "tolist": lambda: x.tolist(),
             "boolean-mask index": lambda: x[x > 0.5], "boolean-mask assignment": lambda: x.index_put_((x > 0.5,),
                                                                                                    torch.zeros(())),
             "masked_select": lambda: x.masked_select(x > 0.5), "nonzero": lambda: (x > 0.5).nonzero(),
             "unique": lambda: x.round().unique(), "bincount": lambda: x.mul(3).long().bincount(minlength=3),
             "repeat_interleave": lambda: x.repeat_interleave(x.long() + 1), "torch.tensor": lambda: torch.tensor(1.0)}
    for name, work in waits.items():
        with pytest.raises(HostSync), HostSyncGuard():
            work()
        assert callable(torch.Tensor.tolist) and x.tolist(), name  # restored on the way out
    with HostSyncGuard():  # what stays on the device passes
        torch.where(x > 0.5, x, 0.0).sum()
        x[torch.arange(2)].mul(2.5)
        torch.full((2,), 3.0).repeat_interleave(2)


@pytest.mark.parametrize("overrides", [
    {"objective": {"name": "pgd_at"}, "perturbation": {"name": "awp", "gamma": 0.01}},
    {"objective": {"name": "pgd_at"}, "perturbation": {"name": "rwp", "gamma": 0.01, "c_min": 1.7, "steps": 2}},
    {"objective": {"name": "trades"}, "criterion": {"name": "label_smoothing"},
     "averaging": {"name": "ema", "warmup": 0.25, "ramp": True, "copy_buffers": True}},
    {"objective": {"name": "trades"}, "criterion": {"name": "cross_class"}, "averaging": {"name": "ema"}},
    {"objective": {"name": "mart"}, "perturbation": {"name": "awp", "gamma": 0.01},
     "averaging": {"name": "iswa", "start": 0.25}},
    {"objective": {"name": "fast_at"}, "criterion": {"name": "tfkd"}, "early_stop": {"rule": "small_loss"}},
    {"objective": {"name": "standard"}, "early_stop": {"rule": "cas_trend"}},
    {"data": {**synthetic_config()["data"], "per_class": 48, "epoch": 200},
     "extra": {"source": "rest", "labels": "provided", "fraction": 0.5,
               "sampler": {"name": "cross_class", "every": 1}}},
], ids=["pgd_at+awp", "pgd_at+rwp", "trades+ls+ema_wang", "trades+cross_class+ema", "mart+awp+iswa",
        "fast_at+tfkd+small_loss", "standard+cas_trend", "pgd_at+extra+cross_class_sampler"])
def test_a_training_step_and_its_step_callbacks_never_wait_for_the_device(tmp_path, overrides):
    from atlens.runs import RunDirectory
    from tests.sync_guard import HostSyncGuard

    cfg = check(config_from_dict(synthetic_config(**overrides)))
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    loop = Loop(build(cfg, torch.device("cpu"), run=run))
    for cb in loop.callbacks:
        cb.on_fit_start(loop)
    x, y = next(iter(loop.parts.loader))
    out = loop.step(x, y, 0.0, 0)  # the first step may set things up (EMA copies the weights once)
    for cb in loop.callbacks:
        cb.on_step_end(loop, out)
    with HostSyncGuard():  # what would make the host wait for a CUDA device raises (tests/sync_guard.py)
        for batch in range(1, 3):
            out = loop.step(x, y, 0.0, batch)
            for cb in loop.callbacks:
                cb.on_step_end(loop, out)
    row = {"epoch": 1}
    loop.epoch = 1
    for cb in loop.callbacks:  # the statistics read their counters once, at the epoch's end
        if cb.phase == "statistics":
            cb.on_epoch_end(loop, row)
    assert row["small_loss_share"] is not None and row["train_loss"] > 0


def test_a_non_finite_loss_names_its_step_once_the_epoch_ends():
    cfg = check(config_from_dict(synthetic_config(**{"optim.lr": 1e30})))
    loop = Loop(build(cfg, torch.device("cpu")), [])
    x, y = next(iter(loop.parts.loader))
    loop.step(x, y, 0.0, 0)
    loop.step(x, y, 0.0, 1)
    with pytest.raises(atlens.errors.NonFiniteLossError, match="at epoch 1, batch 2 .*lower optim.lr"):
        loop._raise_if_not_finite()


def test_train_cas_uses_the_head_weights_its_features_were_computed_with():
    cfg = check(config_from_dict(synthetic_config(model={"name": "mlp", "hidden": [16]})))
    loop = Loop(build(cfg, torch.device("cpu")), [])
    weight, bias = loop.model.head.weight.detach().clone(), loop.model.head.bias.detach().clone()
    x, y = next(iter(loop.parts.loader))
    out = loop.step(x, y, 0.0)
    assert not torch.equal(loop.model.head.weight, weight)  # the optimiser has moved the head since
    assert torch.equal(out.head_weight, weight)  # the step's features travel with the weights they met
    assert torch.allclose(out.features @ weight.T + bias, out.logits.detach(), atol=1e-5)


def test_the_features_hook_is_removed_even_when_the_forward_fails():
    model = linear_classifier(torch.randn(3, 4))
    with pytest.raises(RuntimeError):
        forward_with_features(model, torch.randn(2, 5, 1, 1))  # wrong width
    assert not model.head._forward_hooks
    forward = forward_with_features(model, torch.randn(2, 4, 1, 1))
    assert forward.features.shape == (2, 4) and not model.head._forward_hooks


class Renamed(Callback):
    key = "renamed_best_tracker"

    def state_dict(self):
        return {"best": 1.0}


def test_resume_names_every_callback_state_it_cannot_place():
    cfg = check(config_from_dict(synthetic_config()))
    parts = build(cfg, torch.device("cpu"))
    saved = Loop(parts, []).state_dict()
    saved["callbacks"] = {"Checkpoints": {"best_value": 0.5, "best_epoch": 3}}
    warnings = Loop(parts, [Renamed()]).load_state_dict(saved, "last.pt")
    assert any("'renamed_best_tracker' finds no saved state" in w for w in warnings)
    assert any("'Checkpoints' that this run does not have" in w for w in warnings)


def test_callbacks_run_in_phase_order_and_an_unknown_phase_is_refused():
    class Writer(Callback):
        phase = "metrics"

    class Statistic(Callback):
        phase = "statistics"

    class Mine(Callback):
        pass

    writer, statistic, mine, second = Writer(), Statistic(), Mine(), Statistic()
    assert in_phase_order([writer, statistic, mine, second]) == [statistic, second, mine, writer]

    class Odd(Callback):
        phase = "whenever"

    with pytest.raises(ValueError, match="unknown callback phase.*whenever"):
        in_phase_order([Odd()])


def test_a_builder_is_handed_only_the_arguments_its_signature_takes():
    registry: Registry = Registry("thing", skip=("teachers", "epochs"))
    registry.register("plain")(lambda gamma=1.0: ("plain", gamma))
    registry.register("teached")(lambda teachers, gamma=1.0: ("teached", teachers, gamma))
    registry.register("open")(lambda **kwargs: ("open", kwargs))
    provided = {"teachers": {"adv": "T"}, "epochs": 3}
    assert registry.build("plain", {"gamma": 2.0}, "thing", **provided) == ("plain", 2.0)
    assert registry.build("teached", {}, "thing", **provided) == ("teached", {"adv": "T"}, 1.0)
    assert registry.build("open", {}, "thing", **provided) == ("open", provided)


def test_attack_names_are_parsed_in_one_place():
    """Every consumer (eval suite, API, CAS tracking, config check, time estimate) reads names through ATTACKS;
    a second parser of pgdN anywhere in the package fails this test."""
    parser = re.compile(r"""pgd\(?\\d|pgd\[1-9\]|\[3:\]\)|startswith\(["']pgd""")
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "atlens").rglob("*.py")
                 if path.name != "attacks.py" and parser.search(path.read_text())]
    assert offenders == []
    from atlens.evaluation.attacks import ATTACKS

    assert ATTACKS.pgd_steps("pgd7") == 7 and ATTACKS.label("pgd100") == "PGD-100" and ATTACKS.cost("pgd20") > 20
    with pytest.raises(ConfigError, match="expected pgdN"):
        ATTACKS.pgd_steps("cw")
    with pytest.raises(ConfigError, match="unknown attack 'pgd0'"):
        ATTACKS.cost("pgd0")


def test_one_threat_model_builder_with_the_norms_usual_budget():
    assert threat_model("l2").epsilon == DEFAULT_EPSILON["l2"] == 0.5
    assert threat_model().epsilon == pytest.approx(8 / 255)
    run_attack = config_from_dict(synthetic_config()).attack  # linf 0.05
    assert threat_model(base=run_attack).epsilon == 0.05 and threat_model("l2", base=run_attack).epsilon == 0.5
    for bad in (-0.1, 0, 8):
        with pytest.raises(ConfigError, match=f"epsilon {bad:g}: expected > 0"):
            threat_model("linf", bad)
    model = linear_classifier(torch.randn(2, 4))
    data = (torch.rand(6, 4, 1, 1), torch.tensor([0, 1, 0, 1, 0, 1]))
    with pytest.raises(ConfigError, match="epsilon -0.1"):
        atlens.evaluate(model, data, attacks=["pgd20"], epsilon=-0.1)


@pytest.mark.parametrize("section,package", [({"runtime": {"tensorboard": True}}, "tensorboard"),
                                             ({"loggers": ["tensorboard"]}, "tensorboard"),
                                             ({"loggers": [{"name": "wandb", "mode": "offline"}]}, "wandb"),
                                             ({"loggers": ["mlflow"]}, "mlflow")])
def test_a_missing_logger_package_is_one_line_at_the_dry_run(monkeypatch, section, package, capsys, tmp_path):
    import importlib.util

    import yaml

    from atlens.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name))
    with pytest.raises(ConfigError, match=rf"loggers\[{package}\] needs the {package} package: pip install "
                                          rf"'atlens\[{package}\]'"):
        check(config_from_dict(synthetic_config(**section)))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(synthetic_config(**section)))
    assert main(["train", str(tmp_path / "run.yaml"), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"needs the {package} package" in error


def test_the_api_applies_overrides_to_a_dict_config(tmp_path):
    run = atlens.train(synthetic_config(**{"optim.epochs": 2}), tmp_path / "run", overrides=["optim.epochs=1"])
    assert len(run.read_metrics()) == 1


def test_an_interrupted_demo_writes_no_report(tmp_path, monkeypatch, capsys):
    from atlens.cli import main as cli
    from atlens.cli import train

    monkeypatch.setattr(train, "train", lambda *args, **kwargs: 130)
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 130
    assert "report:" not in capsys.readouterr().out and not (tmp_path / "demo" / "report.html").exists()


class Threads(Callback):
    def on_fit_start(self, loop):
        self.threads = torch.get_num_threads()


def test_a_teacher_trained_first_leaves_the_student_its_own_threads(tmp_path):
    import yaml

    teacher = synthetic_config(objective={"name": "standard"}, runtime={"progress": False, "threads": 1},
                               **{"optim.epochs": 1})
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    seen = Threads()
    train_run(tmp_path / "student", callbacks=[seen], **{
        "optim.epochs": 1, "runtime": {"progress": False, "threads": 2},
        "criterion": {"name": "kd", "std_teacher": {"config": str(tmp_path / "teacher.yaml")}}})
    assert (tmp_path / "student" / "teachers" / "std" / "summary.json").is_file()
    assert seen.threads == 2
