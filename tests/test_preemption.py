"""A signal stops a run at a step boundary with a checkpoint, and the same command continues it as if it had never
stopped: signals at seeded random steps of an AWP + KD + EMA + extra-data run, a second signal during the
checkpoint's write, the CLI's exit status and message, and the SLURM requeue with its cap on time-outs."""

from __future__ import annotations

import json
import os
import random
import signal

import pytest
import torch
import yaml

from atlens.config import config_from_dict
from atlens.errors import TrainingInterrupted
from atlens.hooks import Callback
from atlens.runs import INTERRUPTED, load_checkpoint
from atlens.runs.history import read_segments
from atlens.training.run import train_to_completion
from atlens.training.stopping import StopSignals, stop_signals
from tests.conftest import fake_scontrol, synthetic_config

END = 99  # the step of SignalAt's (epoch, step) that means the end of that epoch (its evaluation)


class SignalAt(Callback):
    """Sends ``sig`` to this process after the given (epoch, step) pairs: 1-based epoch, steps done in it, or END
    during that epoch's end (with the evaluation)."""

    phase = "evaluation"

    def __init__(self, *at: tuple[int, int], sig: signal.Signals = signal.SIGUSR1) -> None:
        self.at, self.sig = set(at), sig

    def on_step_end(self, loop, out):
        if (loop.epoch + 1, loop.position) in self.at:
            os.kill(os.getpid(), self.sig)

    def on_epoch_end(self, loop, row):
        if (loop.epoch, END) in self.at:
            os.kill(os.getpid(), self.sig)


def composed(teacher) -> dict:
    """AWP, self-teacher KD, EMA and pseudo-labelled extra data drawn by the cross-class sampler, with an evaluation
    every second epoch and the early-stop signals every run logs: 4 epochs of 4 batches."""
    data = {**synthetic_config()["data"], "per_class": 48, "epoch": 192, "batch_size": 48}
    return synthetic_config(**{
        "data": data, "optim.epochs": 4, "perturbation": {"name": "awp", "gamma": 0.05},
        "criterion": {"name": "kd", "adv_teacher": str(teacher), "std_teacher": str(teacher)},
        "averaging": {"name": "ema", "decay": 0.9},
        "extra": {"source": "rest", "labels": "pseudo", "teacher": str(teacher), "fraction": 0.5,
                  "sampler": {"name": "cross_class", "every": 2}},
        "eval": {"steps": 3, "examples": 64, "every": 2}, "analysis": {"cas_every": 2, "cas_attack": "eval"},
        "early_stop": {"rule": "small_loss", "small_loss_limit": 0.05}})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("preemption") / "teacher"
    cfg = synthetic_config(**{"objective": {"name": "standard"}, "optim.epochs": 1, "eval": {"steps": 1,
                                                                                              "examples": 32}})
    train_to_completion(config_from_dict(cfg), folder, log=lambda message: None)
    return folder


def quiet(message: str) -> None:
    pass


def same_runs(a, b) -> None:
    """Metrics (but the seconds), summary (but the history and times), every checkpoint's weights, CAS."""
    def rows(path):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (path / "metrics.jsonl").read_text().splitlines()]

    assert rows(b) == rows(a)
    ignore = ("history", "total_seconds")
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    assert {k: v for k, v in sb.items() if k not in ignore} == {k: v for k, v in sa.items() if k not in ignore}
    for name in ("last", "best", "selected"):
        if (a / "checkpoints" / f"{name}.pt").exists():
            ca, cb = (load_checkpoint(p / "checkpoints" / f"{name}.pt") for p in (a, b))
            for key in ("model", "training_model"):
                if key in ca:
                    assert all(torch.equal(ca[key][k], cb[key][k]) for k in ca[key]), (name, key)
    written = sorted(p.name for p in (a / "analysis").glob("cas-*.json"))
    assert written == sorted(p.name for p in (b / "analysis").glob("cas-*.json"))
    for name in written:
        assert (b / "analysis" / name).read_text() == (a / "analysis" / name).read_text()
    assert not (b / "checkpoints" / INTERRUPTED).exists()  # removed once last.pt was newer


def test_signals_at_seeded_random_steps_then_the_same_call_resumes_to_the_uninterrupted_run(tmp_path, teacher):
    cfg = config_from_dict(composed(teacher))
    full = tmp_path / "full"
    train_to_completion(cfg, full, log=quiet)
    batches, rng = 4, random.Random(42)
    # seeded random steps inside epochs 1, 2 and 4, epoch 2's last step (its end not yet run), and epoch 3's end
    # (a signal during its evaluation: the stop comes after the epoch's checkpoint, last.pt)
    inside = rng.sample([(e, s) for e in (1, 2) for s in range(1, batches)], 2) + [(4, rng.randrange(1, batches))]
    stops = sorted(inside + [(2, batches), (3, END)])
    cut = tmp_path / "cut"
    for epoch, step in stops:
        with pytest.raises(TrainingInterrupted) as stopped:
            train_to_completion(cfg, cut, callbacks=[SignalAt((epoch, step))], log=quiet)
        assert stopped.value.signal_name == "SIGUSR1"
        if step == END:
            assert (stopped.value.epoch, stopped.value.position) == (epoch, 0)
            assert not (cut / "checkpoints" / INTERRUPTED).exists()
            continue
        assert (stopped.value.epoch, stopped.value.position) == (epoch - 1, step)
        state = load_checkpoint(cut / "checkpoints" / INTERRUPTED)
        assert state["epoch"] == epoch - 1 and state["within_epoch"]["position"] == step
        assert len(state["within_epoch"]["ranks"]) == 1
    logged = []
    train_to_completion(cfg, cut, log=logged.append)
    assert logged[0].startswith(f"resuming {cut} after epoch 3/4, {stops[-1][1]}/4 steps into epoch 4")
    same_runs(full, cut)
    history = json.loads((cut / "summary.json").read_text())["history"]
    assert history["interruptions"] == len(stops)
    assert [s["signal"] for s in history["segments"]] == ["SIGUSR1"] * len(stops) + [None]
    assert "(resumable)" in history["segments"][0]["how"]


OTHER_METHODS = {
    "trades+rwp+swa+ls": {"objective": {"name": "trades"}, "criterion": {"name": "label_smoothing", "beta": 0.2},
                          "perturbation": {"name": "rwp", "gamma": 0.05, "c_min": 1.7, "steps": 3},
                          "averaging": {"name": "swa", "start": 1}},
    "mart+cross_class+iswa+cas_trend": {"objective": {"name": "mart"}, "averaging": {"name": "iswa", "start": 0.25},
                                        "criterion": {"name": "cross_class", "weight": 1.0, "momentum": 0.5},
                                        "early_stop": {"rule": "cas_trend"}},
    "fast_at+tfkd+bn_momentum+val": {"objective": {"name": "fast_at"}, "criterion": {"name": "tfkd"},
                                     "callbacks": [{"name": "batchnorm_momentum", "momentum": 0.01, "first": 1.0}],
                                     "data.val_split": 0.25, "eval": {"steps": 3, "examples": 64, "every": 2}},
}


@pytest.mark.parametrize("name", list(OTHER_METHODS))
def test_every_method_resumes_from_a_signal_inside_an_epoch_as_the_uninterrupted_run(tmp_path, name):
    cfg = config_from_dict(synthetic_config(**{"optim.epochs": 3, "analysis": {"cas_every": 1, "cas_attack": "eval"},
                                               **OTHER_METHODS[name]}))
    train_to_completion(cfg, tmp_path / "full", log=quiet)
    rng = random.Random(name)
    for at in sorted(rng.sample([(e, s) for e in (1, 2, 3) for s in range(1, 4)], 2)):
        with pytest.raises(TrainingInterrupted):
            train_to_completion(cfg, tmp_path / "cut", callbacks=[SignalAt(at)], log=quiet)
    train_to_completion(cfg, tmp_path / "cut", log=quiet)
    same_runs(tmp_path / "full", tmp_path / "cut")


def test_a_second_signal_during_the_checkpoint_write_changes_nothing_and_a_write_cut_short_keeps_the_last(
        tmp_path, monkeypatch):
    """The handler only notes a signal, so a second one while interrupted.pt is written (a scheduler that repeats
    SIGTERM) lets the write finish; a write cut short (a SIGKILL in the grace period) leaves the previous
    checkpoint, from which the run resumes to the same end."""
    import atlens.runs.checkpoint

    cfg = config_from_dict(synthetic_config(**{"optim.epochs": 2, "averaging": {"name": "ema", "decay": 0.9}}))
    full = tmp_path / "full"
    train_to_completion(cfg, full, log=quiet)
    real = atlens.runs.checkpoint.atomic_write

    def signalled(path, write, *args, **kwargs):
        def halfway(handle):
            os.kill(os.getpid(), signal.SIGTERM)  # the second signal arrives in the middle of the write
            write(handle)
        return real(path, halfway if str(path).endswith(INTERRUPTED) else write, *args, **kwargs)

    monkeypatch.setattr(atlens.runs.checkpoint, "atomic_write", signalled)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as stopped:
        train_to_completion(cfg, run, callbacks=[SignalAt((2, 2))], log=quiet)
    assert stopped.value.stop.repeated == 1  # the second signal was noted, and changed nothing
    state = load_checkpoint(run / "checkpoints" / INTERRUPTED)  # whole, not torn
    assert state["within_epoch"]["position"] == 2
    monkeypatch.setattr(atlens.runs.checkpoint, "atomic_write", real)

    def cut_short(path, write, *args, **kwargs):
        def half(handle):
            handle.write(b"half a checkpoint")
            raise KeyboardInterrupt  # the process ends in the middle of the write
        return real(path, half if str(path).endswith(INTERRUPTED) else write, *args, **kwargs)

    before = (run / "checkpoints" / INTERRUPTED).read_bytes()
    monkeypatch.setattr(atlens.runs.checkpoint, "atomic_write", cut_short)
    with pytest.raises(KeyboardInterrupt):
        train_to_completion(cfg, run, callbacks=[SignalAt((2, 3))], log=quiet)
    assert (run / "checkpoints" / INTERRUPTED).read_bytes() == before
    assert not list((run / "checkpoints").glob(".*.tmp"))
    monkeypatch.setattr(atlens.runs.checkpoint, "atomic_write", real)
    train_to_completion(cfg, run, log=quiet)
    same_runs(full, run)


def test_the_stop_signals_are_the_configured_ones_and_submitits_and_handlers_are_restored(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert stop_signals(["SIGTERM", "usr1", "10"]) == [signal.SIGTERM, signal.SIGUSR1, signal.Signals(10)]
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert stop_signals(["SIGTERM"]) == [signal.SIGTERM, signal.SIGUSR2]
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert stop_signals(["SIGTERM"]) == [signal.SIGTERM, signal.SIGUSR1]
    before = signal.getsignal(signal.SIGUSR1)
    stop = StopSignals([signal.SIGUSR1])
    with stop:
        with stop:  # a KD teacher trained inside the run keeps the outer handlers
            os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) == stop._handle
    assert signal.getsignal(signal.SIGUSR1) == before
    assert (stop.received, stop.repeated) == ("SIGUSR1", 1)


@pytest.fixture
def scontrol_calls(tmp_path, monkeypatch):
    """A fake ``scontrol`` first on PATH; the file where it records its calls."""
    folder, calls = fake_scontrol(tmp_path)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_a_timed_out_slurm_job_requeues_itself_until_the_cap_and_the_cli_exits_75(tmp_path, monkeypatch, capsys,
                                                                                scontrol_calls):
    """The time-out signal (runtime.timeout_signal) under SLURM: the CLI says where the run stopped and how long
    after the signal, requeues the job with scontrol (the array task's id), and exits 75; after
    runtime.max_timeouts requeues it stops requeueing and says why. SIGTERM (pre-emption, scancel) never
    requeues."""
    from atlens.cli.main import main
    from atlens.training.loop import Loop

    monkeypatch.setenv("SLURM_JOB_ID", "9001")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "9000")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(synthetic_config(**{"optim.epochs": 3, "runtime": {
        "progress": False, "threads": 2, "max_timeouts": 1}})))
    run = tmp_path / "run"
    step = Loop.step
    signalled = {"sig": signal.SIGUSR1}

    def step_then_signal(self, x, y, progress, batch=0, noise=None):
        out = step(self, x, y, progress, batch, noise) if noise is not None else step(self, x, y, progress, batch)
        if batch == 1:
            os.kill(os.getpid(), signalled["sig"])
        return out

    monkeypatch.setattr(Loop, "step", step_then_signal)
    command = ["train", str(config), "--out", str(run)]
    assert main(command) == 75
    err = capsys.readouterr().err
    assert f"stopped by SIGUSR1 after step 2/4 of epoch 1; {run / 'checkpoints' / INTERRUPTED} written" in err
    assert "s after the signal" in err and "requeued SLURM job 9000_3" in err
    assert scontrol_calls.read_text().splitlines() == ["requeue 9000_3"]
    assert main(command) == 75  # the second time-out exceeds max_timeouts 1: not requeued
    err = capsys.readouterr().err
    assert "timed out 2 times (runtime.max_timeouts=1): the job is not requeued" in err
    assert scontrol_calls.read_text().splitlines() == ["requeue 9000_3"]
    signalled["sig"] = signal.SIGTERM  # pre-emption or scancel: checkpoint and exit, no requeue
    assert main(command) == 75
    assert "stopped by SIGTERM" in capsys.readouterr().err
    assert scontrol_calls.read_text().splitlines() == ["requeue 9000_3"]
    monkeypatch.setattr(Loop, "step", step)
    assert main(command) == 0
    segments = read_segments(run)
    assert [s["signal"] for s in segments] == ["SIGUSR1", "SIGUSR1", "SIGTERM", None]
    # each stopped 2 steps into an epoch, and the next continued there: through epoch 1, into epoch 2, 3
    assert [(s["from_epoch"], s["to_epoch"]) for s in segments] == [(0, 0), (0, 1), (1, 2), (2, 3)]


def test_a_mid_epoch_checkpoint_resumes_only_with_the_number_of_processes_that_wrote_it(tmp_path):
    cfg = config_from_dict(synthetic_config(**{"optim.epochs": 2}))
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train_to_completion(cfg, run, callbacks=[SignalAt((1, 2))], log=quiet)
    path = run / "checkpoints" / INTERRUPTED
    state = load_checkpoint(path)
    state["within_epoch"]["ranks"] *= 2  # as two processes write it
    torch.save(state, path)
    with pytest.raises(Exception, match="each of 2 processes: resume with 2 processes .*not 1"):
        train_to_completion(cfg, run, log=quiet)
