"""Per-step cost of AWP, RWP and two-teacher KD relative to a PGD-10 AT step, in one process.

PreActResNet-18 (width 16), batch 128, 32x32 inputs, CPU. The model is first PGD-trained for a few
steps so that its losses react to weight perturbations as a model in training does (a freshly
initialised network barely moves under a 1% perturbation, and RWP then always runs all K2 steps).
For RWP, c_min is set to the median per-example adversarial loss of the batch, so half the batch
starts below it.

    python benchmarks/remedy_cost.py [--batches 2] [--repeats 2] [--pretrain-steps 30]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from atlens.config import config_from_dict
from atlens.training.criteria import SelfTeacherKD
from atlens.training.trainer import Trainer


def trainer_for(batches: int, **sections) -> Trainer:
    cfg = {
        "data": {"name": "synthetic", "image_size": 32, "channels": 3, "classes": 10,
                 "train_size": 128 * batches, "test_size": 16, "batch_size": 128},
        "model": {"name": "preact_resnet18", "width": 16},
        "attack": {"epsilon": "8/255", "steps": 10},
        "runtime": {"progress": False},
        **sections,
    }
    return Trainer(config_from_dict(cfg), tempfile.mkdtemp())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pretrain-steps", type=int, default=30)
    args = parser.parse_args()

    base = trainer_for(args.batches)
    batches = list(base.train_loader)
    for step in range(args.pretrain_steps):
        base.train_step(*batches[step % len(batches)], 0.05)
    x0, y0 = batches[0]
    x_adv = base.objective.craft(base.model, x0, y0).x_adv
    with torch.no_grad():
        median_loss = F.cross_entropy(base.model(x_adv), y0, reduction="none").median().item()

    methods = {
        "pgd_at": base,
        "awp": trainer_for(args.batches, perturbation={"name": "awp", "gamma": 0.01}),
        "rwp": trainer_for(args.batches, perturbation={"name": "rwp", "gamma": 0.01, "c_min": median_loss}),
        "kd (2 teachers)": trainer_for(args.batches),
    }
    kd = SelfTeacherKD(adv_teacher="adv", std_teacher="std")
    kd.teachers = {"adv": copy.deepcopy(base.model).eval(), "std": copy.deepcopy(base.model).eval()}
    methods["kd (2 teachers)"].criterion = kd
    for trainer in methods.values():  # same starting weights everywhere
        trainer.model.load_state_dict(base.model.state_dict())

    def run(trainer: Trainer) -> float:
        start = time.perf_counter()
        for x, y in batches:
            trainer.train_step(x, y, 0.1)
        return (time.perf_counter() - start) / len(batches)

    for trainer in methods.values():
        run(trainer)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):  # interleaved so machine noise hits every method alike
        for name, trainer in methods.items():
            times[name].append(run(trainer))
    reference = statistics.median(times["pgd_at"])
    print(f"threads={torch.get_num_threads()} PreActResNet-18 w16, batch 128, PGD-10, {args.batches} batches x "
          f"{args.repeats} repeats, after {args.pretrain_steps} PGD-AT steps; RWP c_min = median batch loss "
          f"{median_loss:.3f}")
    steps = methods["rwp"].perturbation.epoch_stats()["rwp_mean_ascent_steps"]
    for name, values in times.items():
        extra = f"   (mean RWP ascent steps {steps:.2f})" if name == "rwp" else ""
        print(f"{name:16}: {statistics.median(values):6.2f} s/step   ratio {statistics.median(values) / reference:.2f}"
              + extra)


if __name__ == "__main__":
    main()
