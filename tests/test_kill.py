"""SIGKILL at random moments of a run — during training, metrics and checkpoint writes — then resume:
every trial ends with the uninterrupted run's metrics and no temporary file left."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from atlens.config import config_from_dict
from atlens.training.run import train_to_completion
from tests.conftest import synthetic_config

ROOT = str(Path(__file__).resolve().parent.parent)
TRIALS = 20


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_run(tmp_path):
    # checkpoints every epoch and figures: most of a short run's time is spent writing files
    raw = synthetic_config(**{"optim.epochs": 5, "checkpoint": {"every": 1}, "analysis": {"cas_every": 1},
                              "runtime": {"progress": False, "threads": 1}})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    cfg = config_from_dict(raw)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    command = [sys.executable, "-m", "atlens.cli.main", "train", "run.yaml", "--out"]
    started = time.monotonic()
    subprocess.run(command + ["reference"], cwd=tmp_path, env=env, check=True, capture_output=True)
    duration = time.monotonic() - started
    reference = rows(tmp_path / "reference")
    rng = random.Random(0)
    killed_with_files = 0
    for trial in range(TRIALS):
        out = tmp_path / f"trial-{trial}"
        process = subprocess.Popen(command + [str(out)], cwd=tmp_path, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.0) * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_with_files += (out / "checkpoints").is_dir()
        train_to_completion(cfg, out, log=lambda message: None)  # resumes, or starts what never started
        assert rows(out) == reference, trial
        assert not [p for p in out.rglob("*.tmp")], trial
    assert killed_with_files >= TRIALS // 2  # most kills landed after the first checkpoint
