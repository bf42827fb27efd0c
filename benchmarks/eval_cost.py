"""Examples per second of each evaluation attack on CPU, to plan evaluation runs.

A small CNN is adversarially trained for a few epochs on scikit-learn's digits (so attacks have
correctly classified points to work on), then each attack of ``atlens eval`` runs on the same
test examples. Plain PGD-20 written in the benchmark is timed alongside as the baseline.

With ``--amp bf16`` (or ``bf16-emulated``) PGD-20 is also crafted under bf16 autocast (judged in fp32), and
the time ratio and both accuracies are printed.

    python benchmarks/eval_cost.py [--examples 200] [--amp bf16|bf16-emulated]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from atlens.attacks import ThreatModel
from atlens.config import config_from_dict
from atlens.evaluation.attacks import ATTACKS, Context
from atlens.evaluation.suite import evaluate_attacks
from atlens.runs import load_model, run_test_data
from atlens.training.run import train_to_completion


def plain_pgd20(model, x, y, eps):
    delta = torch.empty_like(x).uniform_(-eps, eps)
    for _ in range(20):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(torch.clamp(x + delta, 0, 1)), y)
        grad, = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + eps / 4 * grad.sign()).clamp(-eps, eps)
    return torch.clamp(x + delta, 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--amp", choices=["bf16", "bf16-emulated"], help="also craft PGD-20 in this precision")
    args = parser.parse_args()
    cfg = config_from_dict({
        "data": {"name": "digits", "batch_size": 64}, "model": {"name": "cnn", "width": 32, "hidden": 128},
        "attack": {"epsilon": args.epsilon, "steps": 5}, "optim": {"epochs": 8, "lr": 0.05},
        "eval": {"steps": 5, "examples": 100}, "runtime": {"progress": False},
    })
    run = Path(tempfile.mkdtemp()) / "run"
    train_to_completion(cfg, run, log=lambda message: None)
    model = load_model(run, "last")
    data = run_test_data(cfg, args.examples).data
    threat = ThreatModel("linf", args.epsilon)
    print(f"threads={torch.get_num_threads()} cnn (width 32) on digits, {len(data)} examples, linf ε={args.epsilon}")
    x, y = data.images, data.labels
    start = time.perf_counter()
    x_adv = plain_pgd20(model, x, y, args.epsilon)
    plain_time = time.perf_counter() - start
    with torch.no_grad():
        plain_acc = (model(x_adv).argmax(1) == y).float().mean().item()
    print(f"{'plain pgd20':>12}: {len(data) / plain_time:9.1f} ex/s   accuracy {100 * plain_acc:5.1f}%")
    for name in ("clean", "fgsm", "pgd20", "pgd100", "cw", "autoattack"):
        spec = ATTACKS.build(name, Context(model, threat, 10))
        start = time.perf_counter()
        result = evaluate_attacks(model, data, [spec])[name]
        seconds = time.perf_counter() - start
        print(f"{name:>12}: {len(data) / seconds:9.1f} ex/s   accuracy {100 * result['accuracy']:5.1f}%")
        if name == "pgd20" and args.amp:
            start = time.perf_counter()
            mixed = evaluate_attacks(model, data, [spec], precision=args.amp)[name]
            mixed_seconds = time.perf_counter() - start
            print(f"{'pgd20 ' + mixed['precision']['attack']:>12}: {len(data) / mixed_seconds:9.1f} ex/s   accuracy "
                  f"{100 * mixed['accuracy']:5.1f}% (judged in fp32)   time ratio fp32/bf16 "
                  f"{seconds / mixed_seconds:.2f}" + (f"   note: {mixed['precision']['note']}"
                                                      if "note" in mixed["precision"] else ""))


if __name__ == "__main__":
    main()
