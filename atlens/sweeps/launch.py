"""Running a grid: one point after another here, or one job per point through submitit (SLURM, or
local processes). Finished points are skipped and interrupted ones resumed, so re-running the same
command after a crash or a pre-emption completes the grid."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atlens.errors import ConfigError, TrainingInterrupted
from atlens.files import write_json
from atlens.runs import RunDirectory, RunInUseError
from atlens.sweeps.grid import GridPoint, point_config, status
from atlens.training.run import train_to_completion
from atlens.training.stopping import submitit_signal

LAUNCHERS = ("sequential", "local", "slurm")


def run_point(config: str, base: list[str], point: GridPoint, out: str) -> dict[str, Any]:
    """Train one grid point to completion (resuming it if it was interrupted); returns its summary."""
    return train_to_completion(point_config(config, base, point), out)


class PointJob:
    """One grid point as a submitit job that survives pre-emption and time-outs (submitit's ``Checkpointable``
    protocol: a ``checkpoint`` method). While the point trains, atlens' handler takes submitit's signal, so training
    stops at a step boundary with a checkpoint instead of being cut off mid-step; then the signal goes on to
    submitit's own handler, which calls ``checkpoint`` — the same call again, since the run continues from its
    folder — and requeues the job, counting time-outs against the executor's ``max_num_timeout``. A stop by
    another signal (submitit ignores SIGTERM) ends the job; running the same sweep again continues the point."""

    def __call__(self, config: str, base: list[str], point: GridPoint, out: str) -> dict[str, Any]:
        try:
            return run_point(config, base, point, out)
        except TrainingInterrupted as stopped:
            handover = submitit_signal()
            if handover is not None and stopped.signal_name == handover.name:
                signal.raise_signal(handover)  # submitit's handler, back in place: requeue and exit
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def run_grid(config: str, base: list[str], points: list[GridPoint], out: Path, launcher: str = "sequential",
             executor_options: dict[str, Any] | None = None, wait: bool = True,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every unfinished point; writes out/sweep.json (points, overrides, status, jobs, summaries)."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}; choose from {', '.join(LAUNCHERS)}")
    for point in points:  # fail on a bad value before anything runs
        point_config(config, base, point)
    out.mkdir(parents=True, exist_ok=True)
    todo = [p for p in points if status(out / p.name) != "finished"]
    for point in points:
        if point not in todo:
            log(f"{point.name}: finished, skipped")
    jobs: dict[str, str] = {}
    if launcher == "sequential":
        for point in todo:
            log(f"{point.name}: {status(out / point.name)}, training ({' '.join(point.overrides)})")
            try:
                run_point(config, base, point, str(out / point.name))
            except RunInUseError as err:  # another sweep (or a user) trains this point: leave it to them
                log(f"{point.name}: skipped, {err}")
    elif todo:
        jobs = _submit(config, base, todo, out, launcher, executor_options or {}, wait, log)
    record = {"config": str(config), "set": list(base), "launcher": launcher, "points": []}
    for point in points:
        run = RunDirectory(out / point.name)
        entry: dict[str, Any] = {"name": point.name, "overrides": list(point.overrides),
                                 "status": status(run.path)}
        if point.name in jobs:
            entry["job"] = jobs[point.name]
        if run.summary.is_file():
            entry["summary"] = json.loads(run.summary.read_text())
        record["points"].append(entry)
    write_json(out / "sweep.json", record)
    return record


def _submit(config: str, base: list[str], points: list[GridPoint], out: Path, launcher: str,
            options: dict[str, Any], wait: bool, log: Callable[[str], None]) -> dict[str, str]:
    try:
        import submitit
    except ImportError:
        raise ConfigError("the local and slurm launchers use submitit: pip install 'atlens[cluster]'") from None
    folder = out / "jobs"
    # how often a job may time out and be requeued (submitit counts); by default the config's runtime.max_timeouts
    timeouts = options.pop("max_num_timeout", point_config(config, base, points[0]).runtime.max_timeouts)
    if launcher == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=timeouts)
        executor.update_parameters(timeout_min=options.pop("timeout_min", 24 * 60), **options)
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=timeouts)
        executor.update_parameters(name="atlens-sweep", **options)
    with executor.batch():
        handles = [executor.submit(PointJob(), str(Path(config).resolve()), list(base), p,
                                   str((out / p.name).resolve())) for p in points]
    jobs = {p.name: str(job.job_id) for p, job in zip(points, handles)}
    for name, job_id in jobs.items():
        log(f"{name}: submitted as job {job_id} (logs in {folder})")
    if wait:
        for p, job in zip(points, handles):
            job.result()  # re-raises the job's exception with its traceback
            log(f"{p.name}: finished")
    return jobs


def sweep_table(record: dict[str, Any]) -> str:
    """The points of a sweep record as a text table: robust accuracy best, last and their gap (%), and CAS of the
    best and last checkpoints when tracked."""
    lines = [f"{'run':40}{'RA best':>9}{'RA last':>9}{'gap':>7}{'CAS best':>10}{'CAS last':>10}{'ΔCAS':>7}"]
    for point in record["points"]:
        s = point.get("summary", {})
        if "best_epoch" not in s:
            lines.append(f"{point['name']:40}  (not finished)")
            continue
        cas = f"{s['cas_best']:10.2f}{s['cas_last']:10.2f}{s['delta_cas']:+7.2f}" if "cas_best" in s else ""
        lines.append(f"{point['name']:40}{100 * s['best_robust_acc']:9.2f}{100 * s['last_robust_acc']:9.2f}"
                     f"{100 * s['robust_gap']:7.2f}{cas}")
    return "\n".join(lines)
