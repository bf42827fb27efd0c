"""One owner per run: concurrent commands never train the same epochs twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from atlens.runs.lock import OWNER, owner
from tests.conftest import Interrupt, stop_after, synthetic_config, train_run

pytestmark = pytest.mark.slow  # processes: torchrun, kills, concurrent commands

ROOT = str(Path(__file__).resolve().parent.parent)


def atlens(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "atlens.cli.main", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_second_resume_while_the_first_trains_is_refused_and_each_epoch_trains_once(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train_run(run, [stop_after(3)], **{"optim.epochs": 8, "runtime": {"progress": False, "threads": 1}})
    first = atlens("train", "--resume", str(run), cwd=tmp_path)
    wait_for(lambda: (owner(run) or {}).get("pid") == first.pid or first.poll() is not None, "the first to own the run")
    os.kill(first.pid, signal.SIGSTOP)  # the first holds the run and cannot finish before the second has tried
    try:
        assert first.poll() is None, first.communicate()
        second = atlens("train", "--resume", str(run), cwd=tmp_path)
        code, _, err = second.wait(timeout=600), *second.communicate()
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert code == 1 and f"is in use by process {first.pid}" in err and "Traceback" not in err, err
    assert first.wait(timeout=600) == 0, first.communicate()
    assert epochs(run) == list(range(1, 9))
    assert json.loads((run / "summary.json").read_text())["epochs"] == 8


def test_two_identical_sweeps_train_every_point_once(tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(synthetic_config(**{"optim.epochs": 3,
                                                         "runtime": {"progress": False, "threads": 1}})))
    args = ["sweep", str(config), "--grid", "seed=0,1,2", "--out", str(tmp_path / "sweep")]
    sweeps = [atlens(*args, cwd=tmp_path) for _ in range(2)]
    wait_for(lambda: any((tmp_path / "sweep" / f"seed-{seed}" / OWNER).is_file() for seed in (0, 1, 2)),
             "a point to be trained")
    assert [sweep.poll() for sweep in sweeps] == [None, None]  # both run while points are trained
    for sweep in sweeps:
        assert sweep.wait(timeout=900) == 0, sweep.communicate()
    for seed in (0, 1, 2):
        run = tmp_path / "sweep" / f"seed-{seed}"
        assert epochs(run) == [1, 2, 3], seed  # each epoch once: no point was trained twice
        assert (run / "summary.json").is_file()
