"""A new objective, criterion, weight perturbation, weight averaging and callback, registered from outside
atlens, train with it: no atlens file is edited to add a method, and a builder declares only its own
options (atlens hands it only the arguments its signature takes)."""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from atlens.config import config_from_dict
from atlens.hooks import Callback
from atlens.training.criteria import CRITERIA, CrossEntropy
from atlens.training.objectives import OBJECTIVES, Objective, TrainingBatch
from atlens.training.run import train_to_completion
from atlens.weightspace import AVERAGING, PERTURBATIONS, WeightAveraging, WeightPerturbation, perturbable_weights
from tests.conftest import synthetic_config


@OBJECTIVES.register("toy_noise_at")
class NoiseAT(Objective):
    """Cross-entropy on inputs with uniform noise of size ε (a toy: no gradient attack)."""

    name = "toy_noise_at"

    def __init__(self, attack, scale: float = 1.0) -> None:
        super().__init__(attack)
        self.scale = scale
        self.crafted = 0

    def craft(self, model, x, y, noise):
        self.crafted += 1
        delta = noise.uniform(x, -1, 1) * self.scale * self.attack.threat.epsilon
        return TrainingBatch(x, (x + delta).clamp(0, 1), y)


@CRITERIA.register("toy_focal")
class Focal(CrossEntropy):
    """Focal loss (Lin et al. 2017): a criterion with no teachers, taking only its own option."""

    name = "toy_focal"

    def __init__(self, gamma: float = 2.0) -> None:
        self.gamma, self.calls = gamma, 0

    def __call__(self, logits, y, inputs, features=None):
        self.calls += 1
        log_p = F.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        return (-(1 - log_p.exp()) ** self.gamma * log_p).mean()


@AVERAGING.register("toy_step_average")
class StepAverage(WeightAveraging):
    """An equal-weight average of the weights after every ``every``-th step (no run length needed)."""

    name = "toy_step_average"

    def __init__(self, every: int = 1) -> None:
        super().__init__()
        self.every, self.steps = every, 0

    def _ensure(self, model):
        if self.averaged is None:
            self.averaged = AveragedModel(model)
        return self.averaged

    def on_step_end(self, loop, out):
        self.steps += 1
        if self.steps % self.every == 0:
            self._ensure(loop.model).update_parameters(loop.model)


@PERTURBATIONS.register("toy_shrink")
class Shrink(WeightPerturbation):
    """Moves the weights to (1 − γ)·w for the step, using the objective's loss only to count calls."""

    name = "toy_shrink"

    def __init__(self, gamma: float = 0.1) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma, self.losses_seen = gamma, 0

    def active(self, epoch):
        return True

    def perturb(self, model, loss_fn, epoch, all_sum):
        self.losses_seen += len(loss_fn(model))
        weights = perturbable_weights(model)
        self._keep_originals(weights)
        self._set(weights, [-self.gamma * w.detach() for w in weights])

    def epoch_stats(self):
        return {"toy_losses_seen": self.losses_seen}


class GradientNorm(Callback):
    """Records the global gradient norm of the last step of each epoch, and keeps a running count."""

    key = "toy_gradient_norm"

    def __init__(self) -> None:
        self.steps = 0
        self.norm = None

    def on_step_end(self, loop, out):
        self.steps += 1
        grads = [p.grad for p in loop.model.parameters() if p.grad is not None]
        self.norm = torch.sqrt(sum((g**2).sum() for g in grads)).item()

    def on_epoch_end(self, loop, row):
        row["toy_gradient_norm"], row["toy_steps"] = self.norm, self.steps

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_a_toy_objective_criterion_perturbation_averaging_and_callback_from_outside_train_with_atlens(tmp_path):
    cfg = config_from_dict(synthetic_config(objective={"name": "toy_noise_at", "scale": 0.5},
                                            criterion={"name": "toy_focal", "gamma": 1.0},
                                            perturbation={"name": "toy_shrink", "gamma": 0.05},
                                            averaging={"name": "toy_step_average", "every": 2},
                                            **{"optim.epochs": 2}))
    callback = GradientNorm()
    summary = train_to_completion(cfg, tmp_path / "run", callbacks=[callback], log=lambda m: None)
    rows = [__import__("json").loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    batches = 256 // 64
    assert [r["toy_steps"] for r in rows] == [batches, 2 * batches]
    assert all(r["toy_gradient_norm"] > 0 for r in rows)
    assert rows[-1]["toy_losses_seen"] == 2 * 256  # the perturbation saw the objective's per-example loss
    assert summary["best_clean_acc"] > 0.25
    methods = __import__("json").loads((tmp_path / "run" / "methods.json").read_text())
    assert methods["objective"]["name"] == "toy_noise_at" and methods["perturbation"]["name"] == "toy_shrink"
    assert methods["criterion"]["name"] == "toy_focal" and methods["averaging"]["name"] == "toy_step_average"
    assert [r["evaluated_model"] for r in rows] == ["toy_step_average"] * 2  # the average is what is evaluated
    # the default per-example loss of an objective is CE on its training inputs
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    batch = TrainingBatch(x, x, y)
    objective = OBJECTIVES.get("toy_noise_at")
    assert objective is NoiseAT
    expected = F.cross_entropy(model(x), y, reduction="none")
    assert torch.allclose(Objective.per_example_loss(None, model, batch), expected)


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_a_package_of_ones_own_reaches_every_entry_point_from_its_config(tmp_path, monkeypatch, capsys):
    """One package outside atlens registers one component of every kind; its config names the package under
    imports, and train, --dry-run, --resume (in a process that has not imported it), sweep, eval, analyze and
    the report all find its components, which methods.json records."""
    import yaml

    from atlens.cli.main import main
    from tests.outside_package import KINDS, forget_package, outside_config, registries_restored, write_package

    write_package(tmp_path)
    monkeypatch.chdir(tmp_path)  # where a researcher runs atlens from: the folder that holds the package
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(outside_config(synthetic_config(**{"optim.epochs": 3}))))
    with registries_restored():
        assert main(["train", "run.yaml", "--dry-run"]) == 0
        resolved = yaml.safe_load(capsys.readouterr().out)
        assert resolved["imports"] == ["toylab.methods"]
        assert resolved["optim"] == {**resolved["optim"], "name": "toy_sgd", "momentum": 0.8,
                                     "schedule": {"name": "toy_halving", "factor": 0.5}}
        assert resolved["early_stop"]["rule"] == {"name": "toy_best_test", "margin": 0.001}
        assert resolved["callbacks"] == [{"name": "toy_steps", "label": "seen"},
                                         {"name": "toy_steps", "label": "steps"}]
        monkeypatch.setenv("TOY_STOP_AFTER", "2")  # the package's callback interrupts epoch 2, like Ctrl-C
        assert main(["train", "run.yaml", "--out", "run"]) == 130
    monkeypatch.delenv("TOY_STOP_AFTER")
    assert "toylab.methods" not in sys.modules
    with registries_restored():  # a fresh process: only the saved config says what to import
        assert main(["train", "--resume", "run"]) == 0
        assert main(["train", "run.yaml", "--out", "uninterrupted"]) == 0
        assert _rows(tmp_path / "run") == _rows(tmp_path / "uninterrupted")  # resumed = uninterrupted, bit for bit
        rows = _rows(tmp_path / "run")
        # two instances of one callback class, each with its state; 192 labelled examples, 48 a batch
        assert [r["toy_seen"] for r in rows] == [r["toy_steps"] for r in rows] == [4, 8, 12]
        assert [r["lr"] for r in rows] == [0.05, 0.025, 0.0125]  # the package's schedule
        assert [r["evaluated_model"] for r in rows] == ["lab_step_average"] * 3
        methods = json.loads((tmp_path / "run" / "methods.json").read_text())
        assert set(KINDS) <= set(methods)
        assert methods["optimizer"] == {"name": "toy_sgd", "momentum": 0.8}
        assert methods["schedule"] == {"name": "toy_halving", "factor": 0.5}
        assert methods["early_stop"] == {"name": "toy_best_test", "patience": 3, "margin": 0.001}
        assert methods["sampler"] == {"name": "toy_first", "limit": 16}
        assert methods["callbacks"] == [{"name": "toy_steps", "label": "seen"}, {"name": "toy_steps", "label": "steps"}]
        assert methods["loggers"] == [{"name": "toy_jsonl", "file": "toy.jsonl"}]
        assert [methods[k]["name"] for k in ("objective", "criterion", "perturbation", "averaging")] == [
            "lab_noise_at", "lab_focal", "lab_shrink", "lab_step_average"]
        logged = [json.loads(line) for line in (tmp_path / "run" / "toy.jsonl").read_text().splitlines()]
        assert [e.get("step") for e in logged if "step" in e] == [1, 2, 3]
        assert [e["opened"] for e in logged if "opened" in e] == [False, True]  # the resumed run continued it
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["early_stop"]["rule"]["name"] == "toy_best_test"
    with registries_restored():
        assert main(["eval", "run", "--attacks", "clean,toy_noise", "--examples", "32"]) == 0
        assert "Noise" in capsys.readouterr().out
        assert main(["analyze", "run", "--what", "toy_norms"]) == 0
        assert (tmp_path / "run" / "analysis" / "toy_norms.png").is_file()
        assert main(["report", "run"]) == 0
        page = (tmp_path / "run" / "report.html").read_text()
        assert "Weight norms (toylab)" in page and "Noise" in page
    with registries_restored():
        assert main(["sweep", "run.yaml", "--grid", "seed=0,1", "--set", "optim.epochs=1", "--out", "sweep"]) == 0
        record = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
        assert [p["status"] for p in record["points"]] == ["finished", "finished"]
    forget_package()


@OBJECTIVES.register("toy_counting_at")
class CountingAT(NoiseAT, Callback):
    """An objective with state and per-epoch work: being a callback is enough for the loop to call it."""

    name = "toy_counting_at"

    def __init__(self, attack, scale: float = 1.0) -> None:
        super().__init__(attack, scale)
        self.epochs_seen = 0

    def on_epoch_end(self, loop, row):
        self.epochs_seen += 1
        row["toy_objective_epochs"] = self.epochs_seen

    def state_dict(self):
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state):
        self.epochs_seen = state["epochs_seen"]


def test_a_component_of_any_kind_that_is_a_callback_is_hooked_in_and_resumes(tmp_path):
    import pytest

    from tests.conftest import Interrupt, stop_after, train_run

    overrides = {"objective": {"name": "toy_counting_at"}, "optim.epochs": 3}
    with pytest.raises(Interrupt):
        train_run(tmp_path / "run", callbacks=[stop_after(3)], **overrides)
    run, _ = train_run(tmp_path / "run", **overrides)
    assert [r["toy_objective_epochs"] for r in run.read_metrics()] == [1, 2, 3]  # its state came back from epoch 2
