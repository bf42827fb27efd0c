"""Export a run's best and last checkpoints as the plain state dicts torchvision or timm reads, and print
the normalisation the run trained with (as --mean/--std arguments).

    python docs/studies/outside_models/export.py RUN OUT_PREFIX
"""

import sys

import torch

import atlens

run, prefix = sys.argv[1], sys.argv[2]
for checkpoint in ("best", "last"):
    wrapped = atlens.load_model(run, checkpoint=checkpoint)
    torch.save(wrapped.model.state_dict(), f"{prefix}-{checkpoint}.pt")  # keys as torchvision/timm name them
mean = ",".join(repr(v) for v in wrapped.normalize.mean.flatten().tolist())
std = ",".join(repr(v) for v in wrapped.normalize.std.flatten().tolist())
print(f"--mean {mean} --std {std}")
