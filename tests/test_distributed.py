"""Data-parallel training under torchrun with two gloo processes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from atlens.runs import load_model
from tests.conftest import synthetic_config


def deterministic_config(**overrides) -> dict:
    """No random starts and no augmentation, so one process and two shards see exactly the same inputs;
    an MLP, because BatchNorm statistics of a shard differ from those of the global batch on CPU."""
    return synthetic_config(**{
        "model": {"name": "mlp", "hidden": [32]},
        "attack": {"epsilon": 0.05, "steps": 3, "random_start": False},
        "eval": {"steps": 5, "examples": 128, "random_start": False},
        "data.augment": False, "optim.epochs": 3, "analysis": {"cas_every": 1, "cas_attack": "eval"},
        "runtime": {"progress": False, "threads": 1}, **overrides})


def run(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def rows(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(deterministic_config()))
    run(["-m", "atlens.cli.main", "train", "run.yaml", "--out", "single"], tmp_path)
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "atlens.cli.main", "train", "run.yaml", "--out", "ddp"], tmp_path)
    assert two.stdout.count("run directory:") == 1  # only rank 0 reports
    single, ddp = rows(tmp_path / "single"), rows(tmp_path / "ddp")
    assert len(ddp) == 3  # one row per epoch: only rank 0 writes
    for a, b in zip(single, ddp):
        for key in ("train_loss", "train_robust_acc", "test_clean_acc", "test_robust_acc", "cas"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["epoch"], key)
        assert b["lsc_hist"] == pytest.approx(a["lsc_hist"], abs=1e-4)
    weights_single = load_model(tmp_path / "single", "last").state_dict()
    weights_ddp = load_model(tmp_path / "ddp", "last").state_dict()
    for name, value in weights_single.items():
        assert weights_ddp[name].allclose(value, rtol=1e-4, atol=1e-5), name


INTERRUPTED = """
import sys
from atlens.config import load_config
from atlens.training import distributed
from atlens.training.run import train_to_completion
from tests.conftest import Interrupt, stop_after

try:
    train_to_completion(load_config(sys.argv[1]), sys.argv[2], callbacks=[stop_after(3)])
except Interrupt:
    print("interrupted")
finally:
    distributed.shutdown()
"""


def test_a_resumed_two_process_run_continues_the_interrupted_one(tmp_path):
    # random starts, augmentation and CAS with a random start: every rank draws from its own streams
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(synthetic_config(**{
        "model": {"name": "mlp", "hidden": [32]}, "optim.epochs": 4, "analysis": {"cas_every": 2},
        "runtime": {"progress": False, "threads": 1}})))
    (tmp_path / "interrupted.py").write_text(INTERRUPTED)
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env_root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
    run(torchrun + ["-m", "atlens.cli.main", "train", "run.yaml", "--out", "full"], tmp_path)
    done = subprocess.run([sys.executable, *torchrun, "interrupted.py", "run.yaml", "cut"], cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": env_root},
                          capture_output=True, text=True, timeout=600)
    assert done.stdout.count("interrupted") == 2, done.stdout[-2000:] + done.stderr[-4000:]
    assert len(rows(tmp_path / "cut")) == 2  # epochs 1 and 2 written; epoch 3 was lost with the interruption
    run(torchrun + ["-m", "atlens.cli.main", "train", "--resume", "cut"], tmp_path)
    full, resumed = rows(tmp_path / "full"), rows(tmp_path / "cut")
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(full, resumed):
        assert a.keys() == b.keys()
        for key in ("train_loss", "train_robust_acc", "test_clean_acc", "test_robust_acc", "cas"):
            if a[key] is None:
                assert b[key] is None
            else:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["epoch"], key)
    weights_full = load_model(tmp_path / "full", "last").state_dict()
    weights_resumed = load_model(tmp_path / "cut", "last").state_dict()
    for name, value in weights_full.items():
        assert weights_resumed[name].allclose(value, rtol=1e-5, atol=1e-6), name
