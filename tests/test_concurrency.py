"""One owner per run: concurrent commands never train the same epochs twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import Interrupt, stop_after, synthetic_config, train_run

pytestmark = pytest.mark.slow  # processes: torchrun, kills, concurrent commands

ROOT = str(Path(__file__).resolve().parent.parent)


def atlens(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "atlens.cli.main", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_resumes_at_once_train_each_epoch_once(tmp_path):
    overrides = {"optim.epochs": 8, "runtime": {"progress": False, "threads": 1}}
    with pytest.raises(Interrupt):
        train_run(tmp_path / "run", [stop_after(3)], **overrides)
    first, second = (atlens("train", "--resume", str(tmp_path / "run"), cwd=tmp_path) for _ in range(2))
    results = [(p.wait(timeout=600), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    refused = [err for code, _, err in results if code == 1]
    assert codes in ([0, 1], [0, 0]), results
    if refused:  # the second found the run owned by the first
        assert "is in use by process" in refused[0] and "Traceback" not in refused[0]
    else:  # or it started after the first had finished
        assert any("already complete" in out for _, out, _ in results)
    assert epochs(tmp_path / "run") == list(range(1, 9))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 8


def test_two_identical_sweeps_train_every_point_once(tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(synthetic_config(**{"optim.epochs": 3,
                                                         "runtime": {"progress": False, "threads": 1}})))
    args = ["sweep", str(config), "--grid", "seed=0,1,2", "--out", str(tmp_path / "sweep")]
    sweeps = [atlens(*args, cwd=tmp_path) for _ in range(2)]
    for sweep in sweeps:
        assert sweep.wait(timeout=900) == 0, sweep.communicate()
    for seed in (0, 1, 2):
        run = tmp_path / "sweep" / f"seed-{seed}"
        assert epochs(run) == [1, 2, 3], seed  # each epoch once: no point was trained twice
        assert (run / "summary.json").is_file()
