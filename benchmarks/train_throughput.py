"""PGD-10 adversarial-training throughput: atlens's training step vs a reference-style plain loop.

The plain loop is written the way the public reference scripts do it: the attack runs in train mode
and calls ``loss.backward()`` (computing parameter gradients it throws away), and an extra clean
forward pass is made for logging. Both train the same PreActResNet-18 (width 16) on the same
batches of 128 32x32 images, alternating, in one process; the ratio is what to compare.

With ``--amp bf16`` (or ``bf16-emulated`` on a CPU without native bf16) atlens' step also runs under bf16
autocast, alternating with the fp32 step in the same process, and the fp32/bf16 ratio is printed.

    python benchmarks/train_throughput.py [--batches 3] [--repeats 3] [--layout auto|channels_last|contiguous]
                                          [--amp bf16|bf16-emulated]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from atlens.config import config_from_dict
from atlens.training.build import build, check
from atlens.training.loop import Loop

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10


def plain_step(model, optimizer, x, y):
    model.train()
    delta = torch.empty_like(x).uniform_(-EPS, EPS)
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(STEPS):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        grad = delta.grad.detach()
        delta.data = (delta + ALPHA * grad.sign()).clamp(-EPS, EPS)
        delta.data = (x + delta.data).clamp(0, 1) - x
        delta.grad.zero_()
    x_adv = (x + delta).detach()
    loss = F.cross_entropy(model(x_adv), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():  # the references' extra clean forward for logging
        model(x)
    return loss


def floor_step(model, optimizer, x, y, channels_last):
    """The arithmetic a PGD-10 AT step cannot avoid, with nothing else: 10 forwards with a backward to
    the input only, then one forward with a full backward and the optimiser step."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(False)
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(STEPS):
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)
        delta = (delta.detach() + ALPHA * grad.sign()).requires_grad_(True)
    for p in params:
        p.requires_grad_(True)
    loss = F.cross_entropy(model((x + delta).detach()), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--layout", choices=["auto", "channels_last", "contiguous"], default="auto",
                        help="atlens memory layout (auto: channels_last for conv nets)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--amp", choices=["bf16", "bf16-emulated"], help="also time atlens' step in this precision")
    args = parser.parse_args()

    cfg = config_from_dict({
        "data": {"name": "synthetic", "image_size": 32, "channels": 3, "classes": 10,
                 "train_size": 128 * args.batches, "test_size": 16, "batch_size": 128},
        "model": {"name": "preact_resnet18", "width": args.width},
        "attack": {"epsilon": EPS, "steps": STEPS},
        "runtime": {"progress": False, "threads": args.threads,
                    "channels_last": {"auto": None, "channels_last": True, "contiguous": False}[args.layout]},
    })
    trainer = Loop(build(check(cfg), torch.device("cpu")), [])
    mixed = None
    if args.amp:
        mixed_cfg = copy.deepcopy(cfg)
        mixed_cfg.runtime.amp = args.amp
        mixed = Loop(build(check(mixed_cfg), torch.device("cpu")), [])
        if mixed.parts.precision.note:
            print(f"note: {mixed.parts.precision.note}")
    plain_model = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    floor_model = copy.deepcopy(trainer.model)
    floor_opt = torch.optim.SGD(floor_model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    batches = list(trainer.parts.loader)
    images = sum(len(y) for _, y in batches)

    def run_atlens() -> float:
        start = time.perf_counter()
        for x, y in batches:
            trainer.step(x, y, 0.0)
        return images / (time.perf_counter() - start)

    def run_mixed() -> float:
        start = time.perf_counter()
        for x, y in batches:
            mixed.step(x, y, 0.0)
        return images / (time.perf_counter() - start)

    def run_plain() -> float:
        start = time.perf_counter()
        for x, y in batches:
            plain_step(plain_model, plain_opt, x, y)
        return images / (time.perf_counter() - start)

    def run_floor() -> float:
        start = time.perf_counter()
        for x, y in batches:
            floor_step(floor_model, floor_opt, x, y, trainer.parts.channels_last)
        return images / (time.perf_counter() - start)

    trainer.step(*batches[0], 0.0)  # warm-up (allocator, oneDNN primitives)
    plain_step(plain_model, plain_opt, *batches[0])
    floor_step(floor_model, floor_opt, *batches[0], trainer.parts.channels_last)
    if mixed:
        mixed.step(*batches[0], 0.0)
    ours, theirs, floors, mixes = [], [], [], []
    for _ in range(args.repeats):  # alternate so machine noise hits all alike
        ours.append(run_atlens())
        if mixed:
            mixes.append(run_mixed())
        theirs.append(run_plain())
        floors.append(run_floor())
    a, p, f = statistics.median(ours), statistics.median(theirs), statistics.median(floors)
    print(f"threads={torch.get_num_threads()} atlens channels_last={trainer.parts.channels_last} width={args.width} "
          f"batch=128 images/run={images} repeats={args.repeats}")
    print(f"atlens PGD-10 AT: {a:7.1f} img/s   (runs: {', '.join(f'{v:.1f}' for v in ours)})")
    print(f"plain reference : {p:7.1f} img/s   (runs: {', '.join(f'{v:.1f}' for v in theirs)})")
    print(f"floor (11 fwd, 10 input-only bwd, 1 full bwd + step): {f:7.1f} img/s   "
          f"(runs: {', '.join(f'{v:.1f}' for v in floors)})")
    print(f"ratio atlens/plain: {a / p:.2f}")
    print(f"atlens step as a multiple of the floor: {f / a:.2f}x")
    if mixed:
        m = statistics.median(mixes)
        print(f"atlens PGD-10 AT, {mixed.parts.precision.describe()['training_loss']} ({args.amp}): {m:7.1f} img/s   "
              f"(runs: {', '.join(f'{v:.1f}' for v in mixes)})")
        print(f"ratio bf16/fp32 throughput: {m / a:.2f}")


if __name__ == "__main__":
    main()
