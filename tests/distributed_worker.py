"""Run under ``torchrun --nproc_per_node 2``: trains every run of a JSON spec in one process group.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py SPEC OUT``:
SPEC lists ``{"name", "config", "interrupt_after"?}``; each run is trained into OUT/<name>. A run with
``interrupt_after: N`` is interrupted at the end of epoch N (before its metrics and checkpoint are written)
and then resumed in the same processes. Every run's summary records how far the replicas drifted apart
(``replica_max_diff``: the largest difference between any rank's parameters and rank 0's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from atlens.config import config_from_dict
from atlens.hooks import Callback
from atlens.training import distributed
from atlens.training.run import train_to_completion


class ReplicaCheck(Callback):
    """At the end of training, the largest difference between this rank's parameters and rank 0's."""

    phase = "decision"

    def on_fit_end(self, loop, summary):
        flat = torch.cat([p.detach().reshape(-1) for p in loop.model.parameters()])
        reference = flat.clone()
        dist.broadcast(reference, 0)
        gap = (flat - reference).abs().max().reshape(1)
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        summary["replica_max_diff"] = gap.item()


class Interrupt(Exception):
    pass


class InterruptAfter(Callback):
    phase = "user"

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, loop, row):
        if loop.epoch == self.epoch:
            raise Interrupt


def main() -> None:
    spec, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    try:
        for run in spec:
            cfg = config_from_dict(run["config"])
            if run.get("interrupt_after"):
                try:
                    train_to_completion(cfg, out / run["name"], callbacks=[InterruptAfter(run["interrupt_after"])],
                                        log=lambda message: None)
                except Interrupt:
                    pass
            train_to_completion(cfg, out / run["name"], callbacks=[ReplicaCheck()], log=lambda message: None)
    finally:
        distributed.shutdown(finished=True)


if __name__ == "__main__":
    main()
