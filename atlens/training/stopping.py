"""Stopping on a signal at a step boundary, so that a pre-empted or timed-out run ends in a checkpoint.

A scheduler warns a job before it ends it: SLURM sends SIGTERM on pre-emption and ``scancel`` (then SIGKILL after
a grace time), and the signal ``--signal=USR1@120`` names before the time limit; submitit's jobs get its
pre-emption signal (SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise). ``StopSignals`` catches them while
a run trains: its handler only notes the signal, the loop finishes the step it is in, every rank agrees on the
step to stop after (the largest signal number any rank caught, one host-side all-reduce per step), one
mid-epoch checkpoint is written, and ``atlens.errors.TrainingInterrupted`` ends the process with
``atlens.errors.EXIT_RESUMABLE`` (75). A second signal while that happens is noted and changes nothing: the
checkpoint is written atomically, so even a SIGKILL leaves the previous one valid.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable
from types import FrameType, TracebackType
from typing import Any

import torch
from torch import nn

from atlens.errors import CheckpointError

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1")


def signal_named(name: str, key: str = "runtime.stop_signals") -> signal.Signals:
    """``SIGUSR1``, ``USR1`` or a number as a signal; a clear error otherwise."""
    text = str(name).strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            pass
    else:
        found = getattr(signal, text if text.startswith("SIG") else f"SIG{text}", None)
        if isinstance(found, signal.Signals):
            return found
    raise ValueError(f"{key}: {name!r} is not a signal on this system (e.g. SIGTERM, SIGUSR1, USR2)")


def submitit_signal() -> signal.Signals | None:
    """The pre-emption signal of the submitit job this process runs in (None outside one)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return signal_named(os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), "SUBMITIT_PREEMPT_SIGNAL")


def stop_signals(configured: list[str] | tuple[str, ...] = DEFAULT_SIGNALS) -> list[signal.Signals]:
    """The signals that stop a run cleanly: ``configured`` and, inside a submitit job, its pre-emption signal."""
    found = [signal_named(name) for name in configured]
    extra = submitit_signal()
    return found + ([extra] if extra is not None and extra not in found else [])


class StopSignals:
    """While entered, ``signals`` only set ``received`` (the first one's name) and ``received_at``; the loop stops at
    its next step boundary. Re-entering (a KD teacher trained inside a run) keeps the outer handlers. Outside the
    main thread Python cannot install handlers: then nothing is caught and the process behaves as before."""

    def __init__(self, signals: list[signal.Signals] | None = None) -> None:
        self.signals = list(signals) if signals is not None else stop_signals()
        self.received: str | None = None
        self.number = 0  # the first signal's number (0: none yet), which the ranks compare
        self.received_at: float | None = None  # time.monotonic() of the first signal
        self.repeated = 0  # signals after the first, ignored
        self._previous: dict[signal.Signals, object] = {}
        self._depth = 0

    @property
    def requested(self) -> bool:
        return self.received is not None

    def agreed(self, dist: Any) -> str | None:
        """The signal that stops every rank after this step (the largest number any rank caught; ``dist``: a
        ``Distributed``), or None: every rank calls this after every step, and all of them decide alike."""
        number = dist.largest(self.number)
        return signal.Signals(number).name if number else None

    def request(self, name: str) -> None:
        """Stop at the next step boundary as if signal ``name`` had arrived (what the handler does)."""
        if self.received is None:
            self.received, self.received_at, self.number = name, time.monotonic(), signal_named(name).value
        else:
            self.repeated += 1

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.request(signal.Signals(signum).name)

    def seconds_since(self) -> float:
        return 0.0 if self.received_at is None else time.monotonic() - self.received_at

    def __enter__(self) -> StopSignals:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth == 0:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)  # type: ignore[arg-type]
            self._previous = {}


def epoch_state(model: nn.Module, callbacks: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """What this rank holds of an unfinished epoch: its BatchNorm statistics (rank-local until the epoch's end)
    and each callback's ``epoch_state_dict`` by its checkpoint key."""
    return {"buffers": {name: b.detach().cpu() for name, b in model.named_buffers()},
            "callbacks": {key: cb.epoch_state_dict() for key, cb in callbacks}}


def load_epoch_state(ranks: list[dict[str, Any]], dist: Any, model: nn.Module,
                     callbacks: Iterable[tuple[str, Any]], source: str) -> None:
    """Give this rank (of ``dist``, a ``Distributed``) back what ``epoch_state`` saved of it (``ranks``: every
    rank's, as gathered)."""
    if len(ranks) != dist.world:
        raise CheckpointError(f"{source} holds the unfinished epoch's share of each of {len(ranks)} processes: resume "
                              f"with {len(ranks)} processes (torchrun --nproc-per-node {len(ranks)}), not {dist.world}")
    state = ranks[dist.rank]
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(state["buffers"][name])
    for key, cb in callbacks:
        if state["callbacks"].get(key) is not None:
            cb.load_epoch_state_dict(state["callbacks"][key])
