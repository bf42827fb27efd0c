"""What a run went through: one segment per process that trained it — when and where it ran, from which epoch to
which, and how it ended — in ``RUN/segments.json``, copied into the summary and shown by the report.

A segment is written when its process starts training (``ended`` null) and completed when it stops. A process
killed without a word (SIGKILL, a lost machine) leaves its segment open; the next process to train the run
marks it so.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from atlens.errors import TrainingInterrupted
from atlens.files import write_json

SEGMENTS = "segments.json"
KILLED = "killed without a word (no exit recorded)"


def read_segments(run_path: Path) -> list[dict[str, Any]]:
    path = run_path / SEGMENTS
    if not path.is_file():
        return []
    try:
        segments = json.loads(path.read_text())
    except json.JSONDecodeError:  # (written atomically; a hand-edited file is not worth failing a run for)
        return []
    return segments if isinstance(segments, list) else []


def begin_segment(run_path: Path, epoch: int, machine: dict[str, Any], processes: int) -> dict[str, Any]:
    """Record that this process starts training the run after ``epoch`` completed epochs; returns the segment."""
    segments = read_segments(run_path)
    for earlier in segments:
        if earlier.get("ended") is None:
            earlier["how"] = KILLED
    segment = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "host": socket.gethostname(), "pid": os.getpid(),
               "machine": machine, "processes": processes, "from_epoch": epoch, "to_epoch": None, "ended": None,
               "seconds": None, "how": None}
    write_json(run_path / SEGMENTS, [*segments, segment])
    return {**segment, "_clock": time.monotonic(), "_index": len(segments)}


def end_segment(run_path: Path, segment: dict[str, Any], epoch: int, how: str,
                signal: str | None = None) -> list[dict[str, Any]]:
    """Complete this process's segment: the epochs completed by now, how it ended and the signal that stopped it
    (if one did); returns every segment."""
    segments = read_segments(run_path)
    mine = {k: v for k, v in segment.items() if not k.startswith("_")}
    mine.update(to_epoch=epoch, ended=time.strftime("%Y-%m-%d %H:%M:%S"), how=how, signal=signal,
                seconds=round(time.monotonic() - segment["_clock"], 1))
    segments[segment["_index"]: segment["_index"] + 1] = [mine]
    write_json(run_path / SEGMENTS, segments)
    return segments


def how_it_ended(error: BaseException | None) -> str:
    if error is None:
        return "finished"
    if isinstance(error, TrainingInterrupted):
        return f"{error} (resumable)"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C or a signal)"
    return f"stopped by {type(error).__name__}: {str(error)[:200]}".rstrip(": ")


def history(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """What the summary says about the segments: each of them, how many ended before the run did, the wall
    time of all."""
    return {"segments": segments, "interruptions": sum(s.get("how") != "finished" for s in segments),
            "wall_seconds": round(sum(s.get("seconds") or 0 for s in segments), 1)}
