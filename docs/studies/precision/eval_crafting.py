"""Robust accuracy of one fp32-trained checkpoint under attacks crafted in fp32 and in bf16 (judged in fp32),
over attack seeds: a weaker attack in bf16 would show as higher accuracy.

    python docs/studies/precision/eval_crafting.py RUN DATA_ROOT PRECISION [--examples N] [--attacks pgd20,autoattack]
        [--seeds S] [--autoattack-seeds A] [--out FILE]

PRECISION: bf16 (native) or bf16-emulated (any CPU; same arithmetic, slower); it applies to every attack named,
AutoAttack included (on the first A attack seeds: it costs about a hundred PGD-20s).
Writes FILE (default eval_crafting_native.json or eval_crafting_emulated.json here) with the CPU it ran on.
"""

import argparse
import json
import time
from pathlib import Path

import torch

import atlens
from atlens.data import prepare_data
from atlens.precision import cpu_has_bf16
from atlens.training.runtime import machine

parser = argparse.ArgumentParser()
parser.add_argument("run")
parser.add_argument("root")
parser.add_argument("precision")
parser.add_argument("--examples", type=int)
parser.add_argument("--seeds", type=int, default=3)
parser.add_argument("--attacks", default="pgd20")
parser.add_argument("--autoattack-seeds", type=int, default=1)
parser.add_argument("--out", type=Path)
args = parser.parse_args()
kind = "emulated" if args.precision.endswith("emulated") else "native"
out = args.out or Path(__file__).resolve().parent / f"eval_crafting_{kind}.json"
model = atlens.load_model(args.run, checkpoint="best")
test = prepare_data("imagefolder", args.root).test
rows = []
for attack in args.attacks.split(","):
    for seed in range(args.autoattack_seeds if attack == "autoattack" else args.seeds):
        for precision in (False, args.precision):
            started = time.perf_counter()
            accuracy = atlens.evaluate(model, test, attacks=[attack], epsilon=8 / 255, examples=args.examples,
                                       seed=seed, precision=precision, autoattack_precision=precision)[attack]
            rows.append({"seed": seed, "attack": attack, "crafted_in": precision or "fp32", "judged_in": "fp32",
                         "accuracy": accuracy, "seconds": round(time.perf_counter() - started, 1)})
            print(rows[-1], flush=True)
cpu = {**machine(torch.device("cpu")), "native_bf16": cpu_has_bf16()}
out.write_text(json.dumps({"run": args.run, "checkpoint": "best", "examples": args.examples or len(test),
                           "cpu": cpu, "rows": rows}, indent=2) + "\n")
print(out)
