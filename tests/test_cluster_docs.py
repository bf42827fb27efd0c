"""docs/cluster.md's sbatch script, run as far as it runs without SLURM: torchrun trains a small run, SIGUSR1 to
the script (what ``--signal=B:USR1@180`` sends) stops it with a checkpoint and a requeue through ``scontrol`` (a
fake one on PATH), and the script's command run again finishes the run; its sweep command parses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from atlens.runs.history import read_segments
from tests.conftest import fake_scontrol, synthetic_config

pytestmark = pytest.mark.slow  # a torchrun launch

DOC = Path(__file__).resolve().parent.parent / "docs" / "cluster.md"


def blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_the_sbatch_script_stops_on_the_time_out_signal_requeues_and_its_command_finishes_the_run(tmp_path):
    script = tmp_path / "train.sbatch"
    script.write_text(next(b for b in blocks(DOC.read_text()) if b.startswith("#!/bin/bash")))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bin_folder, calls = fake_scontrol(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(synthetic_config(**{"optim.epochs": 6, "data": {
        **synthetic_config()["data"], "train_size": 1024}})))  # long enough to be caught training
    run = tmp_path / "run"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "CONFIG": str(config), "RUN": str(run), "SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_ID": "4242",
           "PATH": f"{bin_folder}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(root), "OMP_NUM_THREADS": "2"}
    job = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not read_segments(run) and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)  # --signal=B:USR1@180: to the batch script
    output = job.communicate(timeout=120)[0]
    assert "written" in output and "s after the signal" in output, output[-3000:]
    assert "requeued SLURM job 4242" in output, output[-3000:]
    assert calls.read_text().splitlines() == ["requeue 4242"]
    assert read_segments(run)[0]["signal"] == "SIGUSR1"
    assert not (run / "summary.json").exists()
    # what the requeued job runs: the script's command, here without torchrun's second start-up
    from atlens.cli.main import main

    assert main(["train", str(config), "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 6 and [s["signal"] for s in summary["history"]["segments"]] == ["SIGUSR1", None]


def test_the_sweep_command_parses():
    from atlens.cli.main import build_parser

    command = next(b for b in blocks(DOC.read_text()) if b.startswith("atlens sweep"))
    args = build_parser().parse_args(command.replace("\\\n", " ").split()[1:])
    assert args.launcher == "slurm" and "timeout_min=1440" in args.slurm
