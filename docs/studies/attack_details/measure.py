"""Two places where atlens's TRADES differs from Zhang et al.'s reference code, measured on a trained network.

1. The start. The reference crafts from x + 0.001·N(0, I) and takes the first gradient there, outside [0, 1] on
   saturated pixels; atlens clamps the start into the box first (every query of the model is a valid input). Both
   attacks are run from the same draw; what differs is x′, the KL it reaches and the accuracy on it.
2. The forward passes. The reference computes the clean logits twice (`logits = model(x_natural)` and again inside
   the KL), so BatchNorm's running statistics take three updates per step (clean, adversarial, clean); atlens
   computes them once (clean, adversarial). The gradients are the same; the running statistics are not. From the
   same checkpoint both schemes run STEPS training-mode steps on the same batches (no weight update), then the two
   sets of statistics are compared and the network is evaluated with each.

Usage (from the repository root): python docs/studies/attack_details/measure.py RUN DATA_ROOT — RUN a trained
CPU-protocol run (its last checkpoint), DATA_ROOT the CIFAR-10 ImageFolder tree. Writes measured.json beside this
script.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import atlens
from atlens.attacks import ThreatModel, pgd
from atlens.data import BatchLoader, load_dataset
from atlens.evaluation import PGDAttack, evaluate
from atlens.seeding import Noise
from atlens.training.objectives import TRADES, TrainAttack

EXAMPLES, STEPS, BATCH = 512, 20, 128
EPSILON, ALPHA = 8 / 255, 2 / 255


def reference_trades_attack(model, x, start, steps=10):
    """Zhang et al.'s trades.py crafting loop (eval mode), from x + ``start`` without clamping the start."""
    model.eval()
    x_adv = x.detach() + start
    target = F.softmax(model(x), dim=1).detach()
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), target, reduction="sum")
        grad = torch.autograd.grad(loss, [x_adv])[0]
        x_adv = x_adv.detach() + ALPHA * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - EPSILON), x + EPSILON).clamp(0.0, 1.0)
    return x_adv


def kl(model, x, x_adv) -> float:
    with torch.no_grad():
        return F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(model(x), 1), reduction="batchmean").item()


def accuracy(model, x_adv, y) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def starts(model, x, y) -> dict:
    model.eval()
    threat = ThreatModel("linf", EPSILON)
    draw = torch.Generator().manual_seed(0)
    ours = pgd(model, x, y, threat, 10, ALPHA, "kl", start="normal", bn_mode="eval", noise=Noise(draw, batch=len(x)))
    draw.manual_seed(0)
    theirs = reference_trades_attack(model, x, 0.001 * torch.randn(x.shape, generator=draw))
    differs = (ours - theirs).abs() > 1e-6
    saturated = (x == 0) | (x == 1)
    return {"pixel_values": differs.numel(), "saturated_pixel_values": int(saturated.sum()),
            "differing_pixel_values": int(differs.sum()),
            "differing_outside_saturated_examples": int((differs.flatten(1).any(1)
                                                         & ~saturated.flatten(1).any(1)).sum()),
            "examples_with_a_difference": int(differs.flatten(1).any(1).sum()),
            "kl_atlens": kl(model, x, ours), "kl_reference": kl(model, x, theirs),
            "accuracy_atlens": accuracy(model, ours, y), "accuracy_reference": accuracy(model, theirs, y)}


def running_statistics(model) -> torch.Tensor:
    return torch.cat([b.flatten() for name, b in model.named_buffers() if name.endswith(("running_mean",
                                                                                         "running_var"))])


def forward_passes(model, train, test) -> dict:
    objective = TRADES(TrainAttack(ThreatModel("linf", EPSILON), 10, ALPHA, True, None), beta=6.0)
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    batches = list(BatchLoader(train, BATCH, shuffle=True, generator=torch.Generator().manual_seed(1)))[:STEPS]
    for i, (x, y) in enumerate(batches):
        torch.manual_seed(i)
        batch = objective.craft(ours, x, y)
        ours.train()
        theirs.train()
        with torch.no_grad():
            objective.loss(ours, batch)  # clean, adversarial
            theirs(batch.x)  # the reference: clean, adversarial, clean
            theirs(batch.x_adv)
            theirs(batch.x)
    a, b = running_statistics(ours), running_statistics(theirs)
    attack = PGDAttack(ThreatModel("linf", EPSILON), 10)
    result = {"steps": len(batches), "relative_difference": ((a - b).norm() / b.norm()).item()}
    for name, net in (("atlens", ours), ("reference", theirs)):
        acc = evaluate(net.eval(), test, attack, 256, seed=0)
        result[f"clean_{name}"], result[f"pgd10_{name}"] = acc.clean, acc.robust
    return result


def gradients_agree(model, train) -> float:
    """Cosine between the parameter gradients of atlens's two-pass TRADES loss and the reference's three-pass one."""
    objective = TRADES(TrainAttack(ThreatModel("linf", EPSILON), 10, ALPHA, True, None), beta=6.0)
    x, y = next(iter(BatchLoader(train, BATCH)))
    batch = objective.craft(model, x, y)
    grads = []
    for passes in (2, 3):
        net = copy.deepcopy(model).train()
        if passes == 2:
            loss = objective.loss(net, batch).loss
        else:
            logits = net(batch.x)
            loss = F.cross_entropy(logits, y) + 6.0 * F.kl_div(F.log_softmax(net(batch.x_adv), 1),
                                                               F.softmax(net(batch.x), 1), reduction="batchmean")
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.parameters()))]))
    return F.cosine_similarity(grads[0], grads[1], dim=0).item()


def main(run: str, root: str) -> None:
    torch.manual_seed(0)
    model = atlens.load_model(run, "last")
    test = load_dataset("imagefolder", "test", root=root).head(EXAMPLES)
    train = load_dataset("imagefolder", "train", root=root)
    x, y = next(iter(BatchLoader(test, EXAMPLES)))
    result = {"run": run, "examples": EXAMPLES, "start": starts(model, x, y),
              "forward_passes": forward_passes(model, train, test), "gradient_cosine": gradients_agree(model, train)}
    out = Path(__file__).with_name("measured.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:3])
