"""Data-parallel training under torchrun with gloo processes on the CPU equals one process.

One torchrun launch of two ranks (a module fixture) trains every configuration below; each test trains the same
configuration in this process and compares metrics, weights, BatchNorm buffers and CAS. Between them the
configurations cover every objective, criterion, weight perturbation, averaging and early-stop rule, with random
attack starts (drawn for the global batch, so a shard draws exactly its rows), CAS tracking, extra data with the
cross-class sampler refreshed every 3 epochs, and runs interrupted and resumed. The network is a small conv-BN
net normalising over the global batch (``runtime.sync_batchnorm``), and no batch splits evenly: 253 training
examples in batches of 64 leave a last batch of 61 (31 and 30 per rank). A second launch trains the uneven run
on three ranks; one run normalises per rank (BatchNorm's default under DDP) and checks that every rank still
evaluates and saves the same model. Every step after a run's first is taken under the host-synchronisation
guard (tests/sync_guard.py) on both ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atlens.config import config_from_dict
from atlens.evaluation.accuracy import evaluate
from atlens.runs import load_model, run_data
from atlens.training.run import train_to_completion
from tests.conftest import synthetic_config
from tests.outside_package import outside_config, registries_restored, write_package

pytestmark = pytest.mark.slow  # processes: torchrun, kills, concurrent commands

ROOT = Path(__file__).resolve().parent.parent


def config(**overrides) -> dict:
    """Random training starts on; a deterministic evaluation attack (each rank evaluates its own shard of the
    test subset, and a random start would be drawn per shard). L2 attacks: an L∞ step takes the sign of the input
    gradient, which turns a last-digit difference in a component near 0 into a step of 2α; with BatchNorm over the
    global batch every component carries a small term through the batch's statistics, summed in another order on
    each rank, so L∞ runs drift apart by chance (1e-4 within an epoch, seen with batches of 63). An L2 step is
    continuous in the gradient."""
    return synthetic_config(**{
        "data": {**synthetic_config()["data"], "train_size": 253},
        "attack": {"norm": "l2", "epsilon": 0.5, "steps": 3},
        "eval": {"steps": 5, "examples": 128, "random_start": False},
        "optim.epochs": 2, "analysis": {"cas_every": 1, "cas_attack": "eval"},
        "runtime": {"progress": False, "threads": 1, "sync_batchnorm": True}, **overrides})


def teacher_config() -> dict:
    return config(objective={"name": "standard"}, analysis={"cas_every": 0})


def kd(teacher: str) -> dict:
    return {"name": "kd", "adv_teacher": teacher, "std_teacher": teacher}


RUNS = {
    "pgd_at+ls+ema+lsc": lambda t: config(criterion={"name": "label_smoothing", "beta": 0.2},
                                          averaging={"name": "ema", "decay": 0.9},
                                          early_stop={"rule": "small_loss", "small_loss_limit": 0.05}),
    "trades+rwp+kd": lambda t: config(objective={"name": "trades"}, criterion=kd(t),
                                      model={"name": "mlp", "hidden": [32]},  # (see TOLERANCE)
                                      perturbation={"name": "rwp", "gamma": 0.05, "c_min": 1.7, "steps": 3}),
    "mart+awp+cross_class+swa": lambda t: config(objective={"name": "mart"},
                                                 criterion={"name": "cross_class", "weight": 1.0, "momentum": 0.5},
                                                 perturbation={"name": "awp", "gamma": 0.05},
                                                 averaging={"name": "swa", "start": 1}),
    "fast_at+tfkd+cas_trend": lambda t: config(objective={"name": "fast_at"}, criterion={"name": "tfkd"},
                                               early_stop={"rule": "cas_trend"}),
    # extra data: pseudo-labelled by the teacher, drawn by the cross-class sampler (refreshed every 3 epochs, its
    # attributions summed over ranks each epoch), epochs of 200 examples as the references define them (4 mixed
    # batches of 63, 31 of them labelled, of the 192 labelled examples)
    "pgd_at+extra+cross_class_sampler": lambda t: config(
        data={**synthetic_config()["data"], "per_class": 48, "epoch": 200, "batch_size": 63}, **{"optim.epochs": 4},
        extra={"source": "rest", "labels": "pseudo", "teacher": t, "fraction": 0.5,
               "sampler": {"name": "cross_class", "every": 3}}),
}
PER_RANK = "pgd_at+per_rank_batchnorm"  # BatchNorm over each rank's shard: not one process, but one model
UNEVEN = "mart+awp+cross_class+swa"  # also trained by three ranks (every batch uneven: 22, 21, 21)
RESUMED = {"resumed": ("mart+awp+cross_class+swa", 1),  # also trained interrupted and resumed, in the same launch
           "resumed_sampler": ("pgd_at+extra+cross_class_sampler", 2)}  # (between two refreshes)
# stopped by SIGUSR1 delivered to one rank only, inside an epoch, then resumed: (run, rank, epoch, step)
SIGNALLED = {"signalled_ema": ("pgd_at+ls+ema+lsc", 1, 1, 2),
             "signalled_per_rank": (PER_RANK, 1, 2, 3)}  # each rank's own BatchNorm statistics, kept
OUTSIDE = "outside"  # every component from a package outside atlens, imported by each process from the config


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Every run of RUNS (and the resumed one) trained by two gloo processes in one torchrun launch."""
    folder = tmp_path_factory.mktemp("distributed")
    teacher = folder / "teacher"
    train_to_completion(config_from_dict(teacher_config()), teacher, log=lambda message: None)
    spec = [{"name": name, "config": make(str(teacher)), "guard": True} for name, make in RUNS.items()]
    spec += [{"name": name, "config": RUNS[run](str(teacher)), "interrupt_after": epoch}
             for name, (run, epoch) in RESUMED.items()]
    per_rank = config(runtime={**config()["runtime"], "sync_batchnorm": False})
    spec.append({"name": PER_RANK, "config": per_rank})
    spec += [{"name": name, "config": per_rank if run == PER_RANK else RUNS[run](str(teacher)),
              "signal_at": [rank, epoch, step]} for name, (run, rank, epoch, step) in SIGNALLED.items()]
    write_package(folder)  # in the processes' working folder, where imports looks first
    spec.append({"name": OUTSIDE, "config": outside_config(config())})
    launch(folder, spec, "ddp", 2)
    launch(folder, [{"name": UNEVEN, "config": RUNS[UNEVEN](str(teacher))}], "ddp3", 3)
    return folder


def launch(folder: Path, spec: list[dict], out: str, ranks: int) -> None:
    (folder / f"{out}.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(ranks), str(ROOT / "tests" / "distributed_worker.py"), f"{out}.json", out],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


KEYS = ("train_loss", "train_robust_acc", "test_clean_acc", "test_robust_acc", "cas", "small_loss_share", "train_cas")
# TRADES crafts from x + 0.001·N(0, I), where the KL's input gradient is about 1e-6 and dominated by rounding: a
# shard's products sum in another order than the whole batch's, so its runs agree to 1e-4 (weights) after two
# epochs where the others agree to 1e-7. A convolution over a shard rounds differently from one over the whole
# batch (the kernel's blocking depends on the batch), enough to turn TRADES's first step elsewhere: on the conv
# net its runs part by ten training examples within two epochs, so the TRADES run trains an MLP. (A rank
# perturbing along its own shard's gradient — AWP, RWP — would move the weights by 1e-2.)
TOLERANCE = {"trades+rwp+kd": (1e-3, 1e-4)}


def assert_same_run(single: Path, ddp: Path, rel: float = 1e-4, abs: float = 1e-5) -> None:
    a_rows, b_rows = rows(single), rows(ddp)
    assert [r["epoch"] for r in b_rows] == [r["epoch"] for r in a_rows]
    for a, b in zip(a_rows, b_rows):
        assert a.keys() == b.keys()
        for key in KEYS + ("early_stop_selected", "rwp_mean_ascent_steps", "evaluated_model"):
            if a.get(key) is None or isinstance(a[key], str):
                assert b.get(key) == a.get(key), (a["epoch"], key)
            else:
                assert b[key] == pytest.approx(a[key], rel=rel, abs=abs), (a["epoch"], key)
        assert b["loss_hist"] == pytest.approx(a["loss_hist"], abs=max(abs, 1e-4))
        if "extra_class_probabilities" in a:  # the cross-class sampler's weights, from attributions over ranks
            assert b["extra_class_probabilities"] == pytest.approx(a["extra_class_probabilities"], abs=1e-4)
    for checkpoint in ("last", "best"):  # weights and BatchNorm buffers
        weights_single = load_model(single, checkpoint).state_dict()
        weights_ddp = load_model(ddp, checkpoint).state_dict()
        assert weights_ddp.keys() == weights_single.keys()
        for name, value in weights_single.items():
            assert weights_ddp[name].double().allclose(value.double(), rtol=rel, atol=abs), (checkpoint, name)
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["replica_max_diff"] == 0.0  # the ranks' models are bit-identical, buffers included


@pytest.mark.parametrize("name", list(RUNS))
def test_two_gloo_processes_match_one_process(two_ranks, name):
    single = two_ranks / "single" / name
    train_to_completion(config_from_dict(RUNS[name](str(two_ranks / "teacher"))), single, log=lambda message: None)
    rel, abs = TOLERANCE.get(name, (1e-4, 1e-5))
    assert_same_run(single, two_ranks / "ddp" / name, rel, abs)
    single_summary = json.loads((single / "summary.json").read_text())
    ddp_summary = json.loads((two_ranks / "ddp" / name / "summary.json").read_text())
    for key in ("cas_best", "cas_last", "best_epoch"):
        assert ddp_summary[key] == pytest.approx(single_summary[key], rel=rel, abs=abs), key
    if "early_stop" in single_summary:
        assert ddp_summary["early_stop"] == single_summary["early_stop"]
    assert ddp_summary.get("extra") == single_summary.get("extra")


@pytest.mark.parametrize("resumed", list(RESUMED))
def test_a_two_process_run_resumed_after_an_interruption_equals_the_uninterrupted_one(two_ranks, resumed):
    ddp = two_ranks / "ddp"
    assert_same_run(ddp / RESUMED[resumed][0], ddp / resumed, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("signalled", list(SIGNALLED))
def test_a_signal_to_one_rank_stops_every_rank_at_one_step_and_the_resumed_run_equals_the_uninterrupted_one(
        two_ranks, signalled):
    ddp = two_ranks / "ddp"
    assert_same_run(ddp / SIGNALLED[signalled][0], ddp / signalled, rel=1e-6, abs=1e-7)
    segments = json.loads((ddp / signalled / "summary.json").read_text())["history"]["segments"]
    assert [s["signal"] for s in segments] == ["SIGUSR1", None]


def test_three_processes_with_uneven_shards_match_one_process(two_ranks):
    single = two_ranks / "single" / UNEVEN
    if not (single / "summary.json").exists():  # (trained by the two-rank test too)
        train_to_completion(config_from_dict(RUNS[UNEVEN](str(two_ranks / "teacher"))), single,
                            log=lambda message: None)
    assert_same_run(single, two_ranks / "ddp3" / UNEVEN)


def test_with_batchnorm_per_rank_every_rank_evaluates_and_saves_the_same_model(two_ranks):
    """Each rank normalises its shard with its own statistics while training; the running statistics are
    averaged over the ranks at the end of every epoch, so the sharded evaluation scores the model the checkpoint
    holds, on every rank."""
    run = two_ranks / "ddp" / PER_RANK
    assert json.loads((run / "summary.json").read_text())["replica_max_diff"] == 0.0
    model = load_model(run, "last")
    cfg = config_from_dict(config())
    test = run_data(cfg).test.evaluation_subset(cfg.eval.examples, cfg.seed).decoded()
    accuracy = evaluate(model, test, None, batch_size=64)
    assert accuracy.clean == pytest.approx(rows(run)[-1]["test_clean_acc"], abs=1e-9)


def test_only_rank_zero_writes(two_ranks):
    run = two_ranks / "ddp" / "trades+rwp+kd"
    assert len(rows(run)) == 2  # one row per epoch
    assert yaml.safe_load((run / "config.yaml").read_text())["objective"]["name"] == "trades"


def test_two_processes_train_a_package_of_ones_own_from_its_config_as_one_process_does(two_ranks, monkeypatch):
    monkeypatch.chdir(two_ranks)
    with registries_restored():  # (loading the runs' models imports the package too)
        single = two_ranks / "single" / OUTSIDE
        train_to_completion(config_from_dict(outside_config(config())), single, log=lambda message: None)
        ddp = two_ranks / "ddp" / OUTSIDE
        assert_same_run(single, ddp)
    assert json.loads((ddp / "methods.json").read_text()) == json.loads((single / "methods.json").read_text())
    assert [r["toy_seen"] for r in rows(ddp)] == [r["toy_seen"] for r in rows(single)]  # steps of the global batch
