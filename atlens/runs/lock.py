"""One owner per run: a lock file in the run directory, held by the process that writes into it.

The lock is an OS file lock (``filelock``), so it is released when its process ends however it ends:
the lock of a killed process is taken over by the next one without any clean-up. Who holds it is
written beside it, so a second writer is told which process, on which host, since when.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from atlens.errors import AtlensError

LOCK, OWNER = ".lock", ".owner.json"


class RunInUseError(AtlensError):
    """Another process owns the run directory."""


def owner(path: Path) -> dict | None:
    """Who holds (or last held) the lock of the run at ``path``."""
    try:
        return json.loads((path / OWNER).read_text())
    except (OSError, ValueError):
        return None


def remove_if_only_our_lock(path: Path) -> None:
    """Remove ``path`` when it holds nothing but the lock files of this process (a run that failed before writing
    anything). Another process's lock is never touched: two commands started on one new folder both created it,
    and the one that lost the lock must leave the other's alone."""
    who = owner(path) or {}
    if not path.is_dir() or who.get("pid") != os.getpid() or who.get("host") != socket.gethostname():
        return
    if {p.name for p in path.iterdir()} <= {LOCK, OWNER}:
        for name in (LOCK, OWNER):
            (path / name).unlink(missing_ok=True)
        try:
            path.rmdir()
        except OSError:
            pass  # something appeared in it meanwhile: it is not ours to remove


@contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """Hold the run's lock for the block (re-entrant within a process); another process's lock stops
    this one at once with a message naming its holder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AtlensError(f"cannot create the run directory {path}: {err.strerror or err}") from None
    lock = FileLock(path / LOCK, timeout=0, is_singleton=True, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        who = owner(path) or {}
        raise RunInUseError(
            f"{path} is in use by process {who.get('pid', '?')} on {who.get('host', '?')} "
            f"(started {who.get('started', '?')}: {who.get('command', '?')}); wait for it to finish or stop it"
        ) from None
    except OSError as err:
        raise AtlensError(f"cannot lock the run directory {path}: {err.strerror or err}") from None
    try:
        if lock.lock_counter == 1:
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]}
            (path / OWNER).write_text(json.dumps(record) + "\n")
        yield
    finally:
        lock.release()
