"""A SLURM job that requeues itself when its run was stopped before the time limit, so the same batch script
continues the run; capped by the number of time-outs the run's segments record, so a run that can never finish
(an epoch longer than the job's time, a job that dies at once) does not loop."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from atlens.runs.history import read_segments


def slurm_job(environment: Mapping[str, str] | None = None) -> str | None:
    """The id ``scontrol requeue`` takes for this process's job (an array task's ``JOB_TASK``), or None outside
    SLURM."""
    env = os.environ if environment is None else environment
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def timeouts(run_path: Path, signal_name: str) -> int:
    """How many of the run's segments the time-out signal ended (the one that just ended included)."""
    return sum(segment.get("signal") == signal_name for segment in read_segments(run_path))


def requeue_after_timeout(run_path: Path, signal_name: str, timeout_signal: str | None, max_timeouts: int,
                          log: Callable[[str], None] = print) -> bool:
    """Under SLURM, when ``signal_name`` is the time-out warning (``timeout_signal``), requeue this job with
    ``scontrol requeue`` unless the run already timed out more than ``max_timeouts`` times; returns whether the job
    was requeued. Other signals (SIGTERM: pre-emption, which SLURM requeues itself under ``--requeue``, or a
    ``scancel``, which must stay cancelled) and runs outside SLURM are left as they are."""
    job = slurm_job()
    if job is None or timeout_signal is None or signal_name != timeout_signal:
        return False
    count = timeouts(run_path, signal_name)
    if count > max_timeouts:
        log(f"atlens: {run_path} has now timed out {count} times (runtime.max_timeouts={max_timeouts}): the job is "
            f"not requeued. Look at why it does not finish (RUN/segments.json), then resubmit the same script or "
            f"raise runtime.max_timeouts")
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log(f"atlens: could not requeue SLURM job {job} ({err}); resubmit the same script to continue the run")
        return False
    if done.returncode != 0:
        log(f"atlens: 'scontrol requeue {job}' failed ({done.stderr.strip() or done.returncode}); resubmit the same "
            f"script to continue the run")
        return False
    log(f"atlens: requeued SLURM job {job} (time-out {count} of at most {max_timeouts + 1})")
    return True
