"""A run killed at any moment resumes to the uninterrupted run.

In process, a simulated kill is raised at every write the run makes — each atomic file write (checkpoints,
metrics rewrites, summary, CAS results, figures) just before its rename and each metrics line half-written —
and the run is resumed; two real SIGKILLs of a training process check what no exception can imitate (the
temporary files a killed process leaves, its lock released by the kernel)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml

import atlens.files
import atlens.training.callbacks
from atlens.config import config_from_dict
from atlens.runs import RunDirectory
from atlens.training.run import train_to_completion
from tests.conftest import synthetic_config

pytestmark = pytest.mark.slow  # processes: torchrun, kills, concurrent commands

ROOT = str(Path(__file__).resolve().parent.parent)
# checkpoints every epoch, CAS tracked every epoch, curves drawn: a write at every kind of site
RAW = synthetic_config(**{"optim.epochs": 2, "checkpoint": {"every": 1}, "analysis": {"cas_every": 1},
                          "eval": {"steps": 2, "examples": 64}, "runtime": {"progress": False, "threads": 2}})


class Killed(BaseException):
    """A kill: not an Exception, so no handler of the run's code can catch it as an error."""


def rows(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in RunDirectory(run).read_metrics()]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


class Writes:
    """Counts the run's writes; raises ``Killed`` at write number ``kill_at`` (0: never)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, kill_at: int = 0) -> None:
        self.count, self.kill_at, self.sites = 0, kill_at, []
        # every atomic write ends in atlens.files' os.replace: a proxy module faults there, before the rename
        proxy = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
        proxy.replace = self._replace
        monkeypatch.setattr(atlens.files, "os", proxy)
        append = RunDirectory.append_metrics

        def append_metrics(run: RunDirectory, row: dict) -> None:
            if self._next("metrics.jsonl (append)"):
                with run.metrics.open("a") as handle:  # a kill while writing the line tears it
                    handle.write(json.dumps(row)[:20])
                raise Killed
            append(run, row)

        monkeypatch.setattr(RunDirectory, "append_metrics", append_metrics)
        # curves.png is redrawn when 20 s have passed since the last drawing: on a loaded machine an extra drawing
        # would shift every later write's number between the reference and the killed runs. A clock that stands
        # still leaves the drawing at the end only, whatever the load.
        clock = types.SimpleNamespace(monotonic=lambda: 0.0, perf_counter=time.perf_counter)
        monkeypatch.setattr(atlens.training.callbacks, "time", clock)

    def _next(self, site: str) -> bool:
        self.count += 1
        self.sites.append(site)
        return self.count == self.kill_at

    def _replace(self, source: str, target: str) -> None:
        if self._next(Path(target).name):
            raise Killed
        os.replace(source, target)


def test_a_kill_at_every_write_then_resume_gives_the_uninterrupted_run(tmp_path, monkeypatch):
    cfg = config_from_dict(RAW)
    with monkeypatch.context() as patch:
        writes = Writes(patch)
        train_to_completion(cfg, tmp_path / "reference", log=lambda message: None)
    reference, weights = rows(tmp_path / "reference"), final_weights(tmp_path / "reference")
    sites = writes.sites
    assert {"metrics.jsonl (append)", "last.pt", "best.pt", "epoch-1.pt", "summary.json", "curves.png",
            "cas-best.json"} <= set(sites), sites
    for kill_at in range(1, len(sites) + 1):
        out = tmp_path / f"killed-at-{kill_at}"
        with monkeypatch.context() as patch, pytest.raises(Killed):
            Writes(patch, kill_at)
            train_to_completion(cfg, out, log=lambda message: None)
        train_to_completion(cfg, out, log=lambda message: None)  # resumes, or starts what never started
        site = f"killed at write {kill_at} ({sites[kill_at - 1]})"
        assert rows(out) == reference, site
        assert all(torch.equal(final_weights(out)[k], w) for k, w in weights.items()), site
        assert not list(out.rglob("*.tmp")), site


def test_sigkill_of_a_training_process_then_resume(tmp_path):
    """Two real kills: one in the first epoch's writes and one later; the killed process's temporary files
    are swept and its lock is free."""
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(RAW))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": ROOT}
    command = [sys.executable, "-m", "atlens.cli.main", "train", "run.yaml", "--out"]
    reference = None
    for trial, progress in enumerate((1, 2)):  # killed once the first, then once the second checkpoint exists
        out = tmp_path / f"trial-{trial}"
        process = subprocess.Popen(command + [str(out)], cwd=tmp_path, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / f"epoch-{progress}.pt").is_file() and process.poll() is None:
            assert time.monotonic() < deadline, "the run wrote no checkpoint within 2 minutes"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
        train_to_completion(config_from_dict(RAW), out, log=lambda message: None)
        if reference is None:
            train_to_completion(config_from_dict(RAW), tmp_path / "reference", log=lambda message: None)
            reference = rows(tmp_path / "reference")
        assert rows(out) == reference, trial
        assert not list(out.rglob("*.tmp")), trial
