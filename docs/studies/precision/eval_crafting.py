"""PGD-20 robust accuracy of one fp32-trained checkpoint, attacks crafted in fp32 and in bf16 (judged in fp32),
over three attack seeds: a weaker attack in bf16 would show as higher accuracy.

    python docs/studies/precision/eval_crafting.py RUN DATA_ROOT PRECISION [--examples N]

PRECISION: bf16 (native) or bf16-emulated (any CPU; same arithmetic, slower). Writes eval_crafting.json here.
"""

import argparse
import json
import time
from pathlib import Path

import atlens
from atlens.data import prepare_data

parser = argparse.ArgumentParser()
parser.add_argument("run")
parser.add_argument("root")
parser.add_argument("precision")
parser.add_argument("--examples", type=int)
parser.add_argument("--seeds", type=int, default=3)
args = parser.parse_args()
model = atlens.load_model(args.run, checkpoint="best")
test = prepare_data("imagefolder", args.root).test
rows = []
for seed in range(args.seeds):
    for precision in (False, args.precision):
        started = time.perf_counter()
        accuracy = atlens.evaluate(model, test, attacks=["pgd20"], epsilon=8 / 255, examples=args.examples, seed=seed,
                                   precision=precision)["pgd20"]
        rows.append({"seed": seed, "crafted_in": precision or "fp32", "judged_in": "fp32", "pgd20_accuracy": accuracy,
                     "seconds": round(time.perf_counter() - started, 1)})
        print(rows[-1], flush=True)
out = Path(__file__).resolve().parent / "eval_crafting.json"
out.write_text(json.dumps({"run": args.run, "checkpoint": "best", "examples": args.examples or len(test),
                           "rows": rows}, indent=2) + "\n")
print(out)
