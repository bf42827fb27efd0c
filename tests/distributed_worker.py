"""Run under ``torchrun --nproc_per_node 2``: trains every run of a JSON spec in one process group.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py SPEC OUT``:
SPEC lists ``{"name", "config", "interrupt_after"?, "signal_at"?, "guard"?}``; each run is trained into
OUT/<name>, with ``guard`` its steps under the host-synchronisation guard. A run with ``interrupt_after: N`` is
interrupted at the end of epoch N (before its metrics and checkpoint are written) and then resumed in the same
processes; one with ``signal_at: [RANK, EPOCH, STEP]`` gets SIGUSR1 on that rank alone after that step of that
(1-based) epoch, stops on every rank with a mid-epoch checkpoint, and is resumed in the same processes. Every
run's summary records how far the replicas drifted apart (``replica_max_diff``: the largest difference between
any rank's parameters or buffers and rank 0's).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from atlens.config import config_from_dict
from atlens.errors import TrainingInterrupted
from atlens.hooks import Callback
from atlens.seeding import GLOBAL_NOISE
from atlens.training import distributed
from atlens.training.loop import Loop
from atlens.training.run import train_to_completion
from tests.sync_guard import HostSyncGuard


class ReplicaCheck(Callback):
    """At the end of training, the largest difference between this rank's parameters and floating-point buffers
    (BatchNorm's running statistics), of the trained and of the evaluated model, and rank 0's."""

    phase = "decision"

    def on_fit_end(self, loop, summary):
        tensors = [t for model in (loop.model, loop.evaluated) for t in (*model.parameters(), *model.buffers())]
        flat = torch.cat([t.detach().double().reshape(-1) for t in tensors if t.is_floating_point()])
        reference = flat.clone()
        dist.broadcast(reference, 0)
        gap = (flat - reference).abs().max().reshape(1)
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        summary["replica_max_diff"] = gap.item()


@contextmanager
def steps_guarded():
    """Every training step after a run's first (which may set things up) under the host-synchronisation guard
    (tests/sync_guard.py), and under CUDA's own check where a GPU trains: a collective on the step's path
    (gradients, the weight perturbation's ascent, global BatchNorm, the cross-class criterion) must not make
    the host wait either."""
    step, cuda = Loop.step, torch.cuda.is_available()

    def guarded(self, x, y, progress, batch=0, noise=GLOBAL_NOISE):
        if batch == 0:
            return step(self, x, y, progress, batch, noise)
        if cuda:
            torch.cuda.set_sync_debug_mode("error")
        try:
            with HostSyncGuard():
                return step(self, x, y, progress, batch, noise)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")

    Loop.step = guarded
    try:
        yield
    finally:
        Loop.step = step


class Interrupt(Exception):
    pass


class InterruptAfter(Callback):
    phase = "user"

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, loop, row):
        if loop.epoch == self.epoch:
            raise Interrupt


class SignalAt(Callback):
    """SIGUSR1 to this process after that step on that rank; and on rank 0, a checkpoint written slowly, as on a
    busy shared file system, so that a rank leaving the stop before rank 0 has written it shows."""

    def __init__(self, rank: int, epoch: int, step: int) -> None:
        self.rank, self.epoch, self.step = rank, epoch, step

    def on_step_end(self, loop, out):
        if (loop.dist.rank, loop.epoch + 1, loop.position) == (self.rank, self.epoch, self.step):
            os.kill(os.getpid(), signal.SIGUSR1)
            # the kernel may hand the signal to another thread (gloo's, OpenMP's); Python runs the handler in
            # the main thread at its next check: wait for it, so that the stop comes after this very step
            deadline = time.monotonic() + 30
            while not loop.stop.requested and time.monotonic() < deadline:
                time.sleep(0.001)

    def on_stop(self, loop):
        if loop.dist.rank == 0:
            time.sleep(3)  # user callbacks run before atlens' writers: this delays the checkpoint


def main() -> None:
    spec, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    finished = False
    try:
        for run in spec:
            cfg = config_from_dict(run["config"])
            if run.get("interrupt_after"):
                try:
                    train_to_completion(cfg, out / run["name"], callbacks=[InterruptAfter(run["interrupt_after"])],
                                        log=lambda message: None)
                except Interrupt:
                    pass
            if run.get("signal_at"):
                try:
                    train_to_completion(cfg, out / run["name"], callbacks=[SignalAt(*run["signal_at"])],
                                        log=lambda message: None)
                    raise AssertionError("the signal did not stop the run")
                except TrainingInterrupted as stopped:
                    assert (stopped.epoch + 1, stopped.position) == tuple(run["signal_at"][1:])
            with steps_guarded() if run.get("guard") else nullcontext():
                train_to_completion(cfg, out / run["name"], callbacks=[ReplicaCheck()], log=lambda message: None)
        finished = True
    finally:
        # a barrier only when every run finished: a rank that failed must exit at once, so that torchrun ends the
        # others, instead of waiting in a barrier while they wait in a training collective (until gloo's timeout)
        distributed.shutdown(finished=finished)


if __name__ == "__main__":
    main()
