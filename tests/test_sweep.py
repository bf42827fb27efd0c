"""``atlens sweep``: grid expansion, names, skipping finished points, resuming interrupted ones."""

from __future__ import annotations

import json

import pytest
import yaml

from atlens.cli.main import main
from atlens.config import load_config
from atlens.errors import ConfigError
from atlens.sweeps import grid_points, parse_grid
from atlens.training.run import train_to_completion
from tests.conftest import Interrupt, stop_after, synthetic_config


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(synthetic_config(**{"optim.epochs": 2, "eval.examples": 64})))
    return path


def test_grid_expansion_and_names():
    grid = parse_grid(["attack.epsilon=2/255,8/255", "optim.milestones=[0.5,0.75],[0.3]"])
    assert grid[1] == ("optim.milestones", ["[0.5,0.75]", "[0.3]"])
    points = grid_points(grid)
    assert [p.name for p in points] == ["epsilon-2_255__milestones-0.5_0.75", "epsilon-2_255__milestones-0.3",
                                        "epsilon-8_255__milestones-0.5_0.75", "epsilon-8_255__milestones-0.3"]
    assert points[0].overrides == ("attack.epsilon=2/255", "optim.milestones=[0.5,0.75]")
    # keys sharing a last component keep their full names
    assert grid_points(parse_grid(["attack.steps=5", "eval.steps=10"]))[0].name == "attack.steps-5__eval.steps-10"
    for bad in (["attack.epsilon"], ["attack.epsilon=1,,2"], ["a=1", "a=2"], ["x=[1,2"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def test_sweep_runs_the_grid_then_skips_finished_points_and_resumes_interrupted_ones(config_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    # a half-finished grid: the first point done, the second interrupted after its first epoch
    assert main(["sweep", str(config_file), "--grid", "attack.epsilon=0.03", "--out", str(out)]) == 0
    first = out / "epsilon-0.03"
    first_metrics = (first / "metrics.jsonl").read_text()

    cfg = load_config(config_file, ["attack.epsilon=0.06"])
    with pytest.raises(Interrupt):
        train_to_completion(cfg, out / "epsilon-0.06", callbacks=[stop_after(2)])  # checkpointed after epoch 1
    epoch_one = (out / "epsilon-0.06" / "metrics.jsonl").read_text()
    capsys.readouterr()

    assert main(["sweep", str(config_file), "--grid", "attack.epsilon=0.03,0.06", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epsilon-0.03: finished, skipped" in printed
    assert "epsilon-0.06: partial, training" in printed
    assert (first / "metrics.jsonl").read_text() == first_metrics  # not re-run
    resumed = (out / "epsilon-0.06" / "metrics.jsonl").read_text().splitlines()
    assert len(resumed) == 2 and resumed[0] == epoch_one.strip()
    record = json.loads((out / "sweep.json").read_text())
    assert [p["status"] for p in record["points"]] == ["finished", "finished"]
    assert record["points"][1]["overrides"] == ["attack.epsilon=0.06"]
    assert "RA best" in printed and (out / "report.html").is_file()
    page = (out / "report.html").read_text()
    assert "epsilon-0.03" in page and "epsilon-0.06" in page and "runs compared" in page


def test_sweep_dry_run_validates_every_point(config_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(config_file), "--grid", "attack.epsilon=1/255,2/255", "--grid", "seed=0,1",
                 "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "4 runs under" in printed and "epsilon-1_255__seed-1" in printed and not out.exists()
    assert main(["sweep", str(config_file), "--grid", "attack.epsilon=0.1,-1", "--out", str(out)]) == 2
    assert "attack.epsilon must be a finite number > 0" in capsys.readouterr().err and not out.exists()
    # a component's range error is found before any point trains, not hours into the sweep
    assert main(["sweep", str(config_file), "--grid", "perturbation.gamma=0.01,-1", "--set", "perturbation.name=awp",
                 "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "perturbation" in err and "gamma must be >= 0, got -1" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_submitit_job_of_a_sweep_stopped_by_its_preemption_signal_is_requeued_and_completes(config_file, tmp_path):
    """``atlens sweep --launcher local --no-wait``: a job through submitit's local executor. It gets submitit's
    pre-emption signal (SIGUSR2) while it trains, as SLURM signals a job's tasks: training stops at a step boundary
    with a checkpoint, submitit's handler requeues the job, and the requeued job continues the point to its end.
    (submitit 1.5's ``job._interrupt()`` signals the local controller instead of the task, and the controller has
    no handler for it: it dies.)"""
    import os
    import signal
    import time

    pytest.importorskip("submitit")
    from atlens.runs.history import read_segments

    out = tmp_path / "sweep"
    assert main(["sweep", str(config_file), "--grid", "optim.lr=0.05", "--out", str(out), "--launcher", "local",
                 "--no-wait", "--set", "optim.epochs=8", "--set", "data.train_size=1024"]) == 0  # (caught training)
    record = json.loads((out / "sweep.json").read_text())
    assert "job" in record["points"][0]
    run = out / record["points"][0]["name"]
    deadline = time.monotonic() + 120
    while not read_segments(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    first = read_segments(run)[0]
    os.kill(first["pid"], signal.SIGUSR2)
    while not (run / "summary.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    segments = read_segments(run)
    assert [s["signal"] for s in segments] == ["SIGUSR2", None], segments
    assert segments[0]["pid"] != segments[1]["pid"] and "(resumable)" in segments[0]["how"]
    assert segments[1]["from_epoch"] == segments[0]["to_epoch"] < 8
    logs = "".join(p.read_text() for p in (out / "jobs").glob("*_log.*"))
    assert "Requeued job" in logs
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 8 and summary["history"]["interruptions"] == 1
