"""Mixed precision: bf16 where the CPU (or GPU) has it, recorded per phase, judged in fp32, stored in fp32.

Where the CPU lacks native bf16, ``bf16-emulated`` runs the same autocast code paths (slowly), so the
behaviour is tested on every machine; the native path itself is tested where the CPU has it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atlens import precision
from atlens.errors import ConfigError
from atlens.evaluation.accuracy import PGDAttack, evaluate
from atlens.evaluation.suite import NamedAttack, evaluate_attacks
from atlens.hooks import Callback
from atlens.runs import load_checkpoint
from tests.conftest import linear_classifier, train_run

CPU = torch.device("cpu")
NATIVE = precision.cpu_has_bf16()


def test_what_each_amp_setting_means_on_a_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.amp_dtype("bf16", CPU) == (torch.bfloat16, None)
    assert precision.amp_dtype(True, CPU) == (torch.bfloat16, None)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    dtype, note = precision.amp_dtype("bf16", CPU)
    assert dtype is None and "no native bf16" in note and "bf16-emulated" in note
    assert precision.amp_dtype("bf16-emulated", CPU) == (torch.bfloat16, None)
    assert precision.amp_dtype(False, CPU) == (None, None)
    with pytest.raises(ConfigError, match="fp16 is CUDA's"):
        precision.amp_dtype("fp16", CPU)


class LogitsDtype(Callback):
    """Records the dtype the training loss's forward ran in."""

    key = "logits_dtype"

    def __init__(self):
        self.seen = set()

    def on_step_end(self, loop, out):
        self.seen.add(out.logits.dtype)


def every_tensor(state):
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for value in state.values():
            yield from every_tensor(value)
    elif isinstance(state, (list, tuple)):
        for value in state:
            yield from every_tensor(value)


@pytest.mark.parametrize("remedy", [{}, {"averaging": {"name": "swa", "start": 0.5}},
                                    {"perturbation": {"name": "awp", "gamma": 0.01}}])
def test_bf16_training_records_what_ran_and_stores_everything_in_fp32(tmp_path, remedy):
    spy = LogitsDtype()
    run, summary = train_run(tmp_path / "run", callbacks=[spy], **{"runtime.amp": "bf16-emulated", "optim.epochs": 2,
                                                                    **remedy})
    assert spy.seen == {torch.bfloat16}  # the loss's forward ran in bf16
    expected = {"training_attack": "bf16", "training_loss": "bf16", "evaluation_attack": "fp32",
                "judgement": "fp32", "attribution": "fp32"}
    assert all(row["precision"] == expected for row in run.read_metrics())
    assert summary["precision"] == expected
    state = load_checkpoint(run.checkpoints / "last.pt")
    floats = [t for t in every_tensor({k: state[k] for k in ("model", "optimizer")} | state.get("callbacks", {}))
              if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)  # weights, BN statistics, momentum, averages
    assert all(row["test_robust_acc"] is not None for row in run.read_metrics())


def test_without_native_bf16_the_run_says_so_once_and_runs_fp32(tmp_path, monkeypatch):
    from atlens.config import config_from_dict
    from atlens.training.run import train_to_completion
    from tests.conftest import synthetic_config

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    spy, lines = LogitsDtype(), []
    cfg = config_from_dict(synthetic_config(**{"runtime.amp": "bf16", "optim.epochs": 1}))
    summary = train_to_completion(cfg, tmp_path / "run", callbacks=[spy], log=lines.append)
    assert spy.seen == {torch.float32} and summary["precision"]["training_loss"] == "fp32"
    assert sum("no native bf16" in line for line in lines) == 1


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16)")
def test_native_bf16_training_runs_in_bf16(tmp_path):
    spy = LogitsDtype()
    run, summary = train_run(tmp_path / "run", callbacks=[spy], **{"runtime.amp": "bf16", "optim.epochs": 1})
    assert spy.seen == {torch.bfloat16} and summary["precision"]["training_attack"] == "bf16"


def test_a_bf16_crafted_example_is_judged_in_fp32():
    model = linear_classifier(torch.randn(3, 12))
    seen = {}

    def attack(m, x, y):
        seen["crafting"] = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
        return PGDAttack(precision_threat(), 3)(m, x, y)

    class Judge:
        def update(self, features, labels):
            seen["judging"] = torch.is_autocast_enabled("cpu"), features.dtype

    data = _data()
    evaluate(model, data, attack, observers=[Judge()], clean=False,
             crafting=lambda: precision.autocast("cpu", torch.bfloat16))
    assert seen["crafting"] == (True, torch.bfloat16)
    assert seen["judging"] == (False, torch.float32)


def test_evaluation_records_the_precision_of_each_attack():
    model = linear_classifier(torch.randn(3, 12))
    specs = [NamedAttack("clean", None, {}), NamedAttack("pgd3", PGDAttack(precision_threat(), 3), {})]
    results = evaluate_attacks(model, _data(), specs, precision="bf16-emulated")
    assert results["pgd3"]["precision"] == {"attack": "bf16", "judgement": "fp32"}
    assert results["clean"]["precision"] == {"attack": "none", "judgement": "fp32"}
    fp32 = evaluate_attacks(model, _data(), specs)
    assert fp32["pgd3"]["precision"]["attack"] == "fp32"
    # on a linear model bf16 crafting moves few signs: the accuracies stay close
    assert abs(results["pgd3"]["accuracy"] - fp32["pgd3"]["accuracy"]) <= 0.15


def precision_threat():
    from atlens.attacks import ThreatModel

    return ThreatModel("linf", 0.1, (0.0, 1.0))


def _data():
    from atlens.data import ImageTensors

    gen = torch.Generator().manual_seed(0)
    return ImageTensors(torch.rand(60, 3, 2, 2, generator=gen), torch.arange(60) % 3)


def test_the_model_is_not_changed_by_autocast():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(2, 3, 5, 5))
    with precision.autocast("cpu", torch.bfloat16):
        model.train()(torch.rand(8, 3, 5, 5)).sum().backward()
    assert all(t.dtype == torch.float32 for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())


def test_the_public_evaluate_crafts_autoattack_in_the_precision_asked(monkeypatch):
    import atlens.api

    seen = {}

    def spy(model, images, specs, **kwargs):
        seen.update(kwargs)
        return {spec.name: {"accuracy": 0.5} for spec in specs}

    monkeypatch.setattr(atlens.api, "evaluate_attacks", spy)
    model = linear_classifier(torch.randn(3, 12))
    atlens.api.evaluate(model, _data(), attacks=["clean"], epsilon=0.1, autoattack_precision="bf16")
    assert seen["autoattack_precision"] == "bf16" and seen["precision"] is False
