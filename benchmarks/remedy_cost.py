"""Per-step cost of AWP, RWP, two-teacher KD, the cross-class criterion and the early-warning signals
relative to a PGD-10 AT step, in one process.

PreActResNet-18 (width 16), batch 128, 32x32 inputs, CPU. The model is first PGD-trained for a few
steps so that its losses react to weight perturbations as a model in training does (a freshly
initialised network barely moves under a 1% perturbation, and RWP then always runs all K2 steps).
Every timed step starts from that same state (weights, optimiser, random start of the attack), so
each method is timed on the same situation and repeats differ by machine noise only; a step's cost
is its fastest repeat (noise only adds time). RWP's cost depends on how much of the batch starts
below c_min, so it is timed with c_min at three quantiles of the adversarial losses (the
target is for half the batch below) and with c_min = inf, where every example stays below it and
all K2 steps run (the worst case).

The cross-class criterion's reference is rebuilt from each timed step's own batch (one batch of memory),
which is what a step costs; the signals' per-epoch reduction is outside the step and not timed. The
cross_class sampler of extra data is timed by its per-step work (accumulating the batch's attributions);
its refresh every few epochs is one K x K cosine matrix, outside the step. The extra data itself changes
no step's cost: a batch holds data.batch_size examples either way (an epoch has more of them).

    python benchmarks/remedy_cost.py [--batches 2] [--repeats 3] [--pretrain-steps 30]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from atlens.config import config_from_dict
from atlens.data.extra import ExtraData
from atlens.hooks import Callback
from atlens.training.build import build, check
from atlens.training.early_stop import TrainingSignals
from atlens.training.loop import Loop
from atlens.training.samplers import CrossClass

BELOW_FRACTIONS = (0.25, 0.5, 0.75)


def trainer_for(batches: int, teachers: dict | None = None, callbacks=(), **sections) -> Loop:
    cfg = {
        "data": {"name": "synthetic", "image_size": 32, "channels": 3, "classes": 10,
                 "train_size": 128 * batches, "test_size": 16, "batch_size": 128},
        "model": {"name": "preact_resnet18", "width": 16},
        "attack": {"epsilon": "8/255", "steps": 10},
        "runtime": {"progress": False},
        **sections,
    }
    parts = build(check(config_from_dict(cfg)), torch.device("cpu"), teachers)
    extra = [parts.criterion] if isinstance(parts.criterion, Callback) else []  # hooks of the cross-class criterion
    loop = Loop(parts, [*extra, *(make(parts) for make in callbacks)])
    for callback in loop.callbacks:
        callback.on_fit_start(loop)
    return loop


def adversarial_losses(trainer: Loop, batches: list) -> torch.Tensor:
    losses = []
    for x, y in batches:
        x_adv = trainer.parts.objective.craft(trainer.model, x, y).x_adv
        with torch.no_grad():
            losses.append(F.cross_entropy(trainer.model(x_adv), y, reduction="none"))
    return torch.cat(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=30)
    args = parser.parse_args()

    base = trainer_for(args.batches)
    batches = list(base.parts.loader)
    for step in range(args.pretrain_steps):
        base.step(*batches[step % len(batches)], 0.0)
    losses = adversarial_losses(base, batches)
    c_mins = {q: torch.quantile(losses, q).item() for q in BELOW_FRACTIONS}

    methods = {"pgd_at": base, "awp": trainer_for(args.batches, perturbation={"name": "awp", "gamma": 0.01})}
    for q, c_min in c_mins.items():
        methods[f"rwp, {q:.0%} below"] = trainer_for(
            args.batches, perturbation={"name": "rwp", "gamma": 0.01, "c_min": c_min})
    methods["rwp, K2 cap"] = trainer_for(  # worst case: nothing ever rises above c_min
        args.batches, perturbation={"name": "rwp", "gamma": 0.01, "c_min": float("inf")})
    teachers = {"adv": copy.deepcopy(base.model).eval(), "std": copy.deepcopy(base.model).eval()}
    methods["kd (2 teachers)"] = trainer_for(args.batches, teachers,
                                             criterion={"name": "kd", "adv_teacher": "adv", "std_teacher": "std"})
    methods["cross_class"] = trainer_for(args.batches, criterion={"name": "cross_class", "weight": 1.0})
    methods["pgd_at + signals"] = trainer_for(args.batches, callbacks=[lambda parts: TrainingSignals(10)])
    labelled_extra = ExtraData(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10), "bench", nhwc=False)
    methods["extra, cross_class"] = trainer_for(args.batches, callbacks=[lambda parts: CrossClass(labelled_extra, 10)])
    start_weights = copy.deepcopy(base.model.state_dict())
    start_optimizer = copy.deepcopy(base.parts.optimizer.state_dict())

    def time_step(trainer: Loop, index: int) -> float:
        trainer.model.load_state_dict(start_weights)
        trainer.parts.optimizer.load_state_dict(start_optimizer)
        torch.manual_seed(index)  # same random start of the attack for every method
        start = time.perf_counter()
        out = trainer.step(*batches[index], 0.0)
        for callback in trainer.callbacks:  # per-step work of callbacks (the signals' accumulation)
            callback.on_step_end(trainer, out)
        return time.perf_counter() - start

    for trainer in methods.values():  # warm-up
        time_step(trainer, 0)
        trainer.parts.perturbation.epoch_stats()
    times = {name: [[] for _ in batches] for name in methods}
    for _ in range(args.repeats):  # interleaved step by step so machine noise hits every method alike
        for index in range(len(batches)):
            for name, trainer in methods.items():
                times[name][index].append(time_step(trainer, index))
    # noise on a shared machine only ever adds time: the fastest repeat of a step is its cost
    cost = {name: statistics.mean(min(step) for step in steps) for name, steps in times.items()}
    reference = cost["pgd_at"]
    print(f"threads={torch.get_num_threads()} PreActResNet-18 w16, batch 128, PGD-10, {args.batches} batches x "
          f"{args.repeats} repeats (fastest kept), every step from the state after {args.pretrain_steps} PGD-AT steps; "
          "RWP c_min at quantiles " + ", ".join(f"{q:.2f} -> {c:.3f}" for q, c in c_mins.items()))
    for name, seconds in cost.items():
        stats = methods[name].parts.perturbation.epoch_stats()
        extra = f"   (mean ascent steps {stats['rwp_mean_ascent_steps']:.2f})" if stats else ""
        print(f"{name:18}: {seconds:6.2f} s/step   ratio {seconds / reference:.2f}{extra}")


if __name__ == "__main__":
    main()
