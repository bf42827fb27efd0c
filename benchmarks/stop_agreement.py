"""What the stop agreement costs: the ranks compare their caught signal after every training step (one all-reduce
of one integer on a gloo group), measured against the step itself, on two gloo processes of this machine.

Each rank times PGD-``--steps`` training steps of PreActResNet-18 (width ``--width``) on batches of 128 32x32
inputs split over the ranks, with the agreement after each step and without it, in alternating blocks, and the
agreement alone. The ratio is what to compare: on GPUs a step takes longer and the all-reduce stays on the host
(no wait for the device), so the share there is smaller still.

    python benchmarks/stop_agreement.py [--blocks 5] [--block-steps 10] [--width 16] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def worker(args: argparse.Namespace) -> None:
    from atlens.config import config_from_dict
    from atlens.training import distributed
    from atlens.training.build import build, check
    from atlens.training.loop import Loop
    from atlens.training.stopping import StopSignals

    torch.set_num_threads(1)
    dist = distributed.from_environment(torch.device("cpu"))
    cfg = check(config_from_dict({
        "data": {"name": "synthetic", "classes": 10, "image_size": 32, "channels": 3, "train_size": 1024,
                 "test_size": 64, "batch_size": 128},
        "model": {"name": "preact_resnet18", "width": args.width}, "attack": {"steps": args.steps},
        "runtime": {"progress": False, "threads": 1}}))
    loop = Loop(build(cfg, torch.device("cpu"), rank=dist.rank, world=dist.world), [], dist=dist)
    stop = StopSignals([])
    x, y = next(iter(loop.loader))

    def block(agree: bool) -> float:
        dist.barrier()
        start = time.perf_counter()
        for i in range(args.block_steps):
            loop.step(x, y, 0.0, i)
            if agree:
                stop.agreed(dist)
        dist.barrier()
        return (time.perf_counter() - start) / args.block_steps

    block(True)  # warm-up
    plain, agreeing = [], []
    for _ in range(args.blocks):
        plain.append(block(False))
        agreeing.append(block(True))
    dist.barrier()
    start = time.perf_counter()
    for _ in range(1000):
        stop.agreed(dist)
    alone = (time.perf_counter() - start) / 1000
    if dist.is_main:
        p, a = statistics.median(plain), statistics.median(agreeing)
        print(f"two gloo ranks, PreActResNet-18 width {args.width}, PGD-{args.steps}, batches of 128 (64 per rank)")
        print(f"step without the agreement: {1e3 * p:8.2f} ms (median of {args.blocks} blocks of "
              f"{args.block_steps}; spread {1e3 * min(plain):.2f}-{1e3 * max(plain):.2f})")
        print(f"step with the agreement:    {1e3 * a:8.2f} ms (spread {1e3 * min(agreeing):.2f}-"
              f"{1e3 * max(agreeing):.2f})")
        print(f"the agreement alone:        {1e6 * alone:8.1f} µs per step ({100 * alone / p:.3f} % of a step)")
        print(f"ratio with / without: {a / p:.4f}")
    distributed.shutdown(finished=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--block-steps", type=int, default=10)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               __file__, "--worker", *sys.argv[1:]]
    sys.exit(subprocess.run(command, env=env).returncode)


if __name__ == "__main__":
    main()
