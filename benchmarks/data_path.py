"""The training data path alone: batches per second of atlens's loader against a plain torch DataLoader, for
labelled images and with half of every batch from memory-mapped extra images, and against the rate a training
step consumes batches.

Both loaders form batches of 128 32x32x3 images with a random crop (padding 4) and flip from 10,000 labelled
uint8 images in memory; with ``--images N`` extra, half of every batch is drawn uniformly from an N-image .npy
(3 GB for N = 1M, written once into --folder and reused). The plain loader is what the reference scripts run:
a ``torch.utils.data.DataLoader`` whose dataset converts and augments one image at a time with torchvision's
transforms (in this process: ``num_workers=0``; worker processes would take the cores the step needs). atlens
gathers a batch's rows as uint8 and converts and augments the batch as one tensor. They alternate in one
process; the ratios are what to compare. The step rate is atlens's PGD-10 step of PreActResNet-18 (width 16)
on the same batches: a loader keeps up when it forms batches faster than that.

    python benchmarks/data_path.py [--images 1000000] [--batches 100] [--repeats 3] [--folder /tmp/atlens-extra]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from atlens.config import config_from_dict
from atlens.data import BatchLoader, ImageTensors
from atlens.data.extra import load_extra
from atlens.data.loader import ExtraStream
from atlens.training.build import build, check
from atlens.training.loop import Loop
from atlens.training.samplers import Uniform

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extra_memory import write_images  # noqa: E402  (the same 1M-image file)

BATCH, LABELLED = 128, 10_000


class PlainImages(Dataset):
    """The references' dataset: labelled images, then the extra ones, one image converted and augmented at a
    time (torchvision transforms on an HWC uint8 array, as their CIFAR-10 and TinyImages datasets return)."""

    def __init__(self, labelled: np.ndarray, labels: np.ndarray, extra: np.ndarray | None,
                 extra_labels: np.ndarray | None) -> None:
        self.labelled, self.labels, self.extra, self.extra_labels = labelled, labels, extra, extra_labels
        self.transform = v2.Compose([v2.ToImage(), v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                                     v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.labelled) + (0 if self.extra is None else len(self.extra))

    def __getitem__(self, i: int):
        if i < len(self.labelled):
            return self.transform(self.labelled[i]), int(self.labels[i])
        j = i - len(self.labelled)
        return self.transform(np.asarray(self.extra[j])), int(self.extra_labels[j])


class HalfExtra(Sampler):
    """Carmon et al.'s SemiSupervisedSampler in short: every batch half labelled (a permutation), half extra
    (uniform)."""

    def __init__(self, labelled: int, extra: int, batches: int) -> None:
        self.labelled, self.extra, self.batches = labelled, extra, batches

    def __iter__(self):
        order = torch.randperm(self.labelled)
        for b in range(self.batches):
            half = order[b * BATCH // 2 % self.labelled:][: BATCH // 2]
            yield (half.tolist() + (self.labelled + torch.randint(self.extra, (BATCH - len(half),))).tolist())

    def __len__(self) -> int:
        return self.batches


def rate(batches, count: int) -> float:
    """Batches per second over the first ``count`` batches of ``batches``."""
    started, formed = time.perf_counter(), 0
    for _ in batches:
        formed += 1
        if formed == count:
            break
    return formed / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000, help="extra images (0: labelled alone)")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/atlens-extra"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (LABELLED, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(LABELLED) % 10
    labelled = ImageTensors(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels))
    setups = {"labelled": (None, None)}
    if args.images:
        path = write_images(args.folder, args.images)
        extra = load_extra(str(path), [str(i) for i in range(10)], 32, 3)
        setups[f"+ {args.images:,} memory-mapped"] = (extra, np.load(path, mmap_mode="r"))

    def ours(extra):
        stream = None if extra is None else ExtraStream(extra, 0.5, Uniform(extra))
        return BatchLoader(labelled, BATCH, shuffle=True, crop_padding=4, flip=True, extra=stream,
                           generator=torch.Generator().manual_seed(0), epoch_examples=BATCH * args.batches)

    def plain(mapped):
        dataset = PlainImages(images, labels, mapped, None if mapped is None else np.arange(len(mapped)) % 10)
        if mapped is None:
            return DataLoader(dataset, BATCH, shuffle=True, num_workers=0)
        return DataLoader(dataset, batch_sampler=HalfExtra(LABELLED, len(mapped), args.batches), num_workers=0)

    cfg = config_from_dict({"data": {"name": "synthetic", "image_size": 32, "channels": 3, "classes": 10,
                                     "train_size": BATCH, "test_size": 16, "batch_size": BATCH},
                            "model": {"name": "preact_resnet18", "width": 16},
                            "attack": {"epsilon": 8 / 255, "steps": 10}, "runtime": {"progress": False}})
    trainer = Loop(build(check(cfg), torch.device("cpu")), [])
    x, y = next(iter(ours(None)))
    trainer.step(x, y, 0.0)  # warm-up
    steps = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        trainer.step(x, y, 0.0)
        steps.append(1 / (time.perf_counter() - started))
    step = statistics.median(steps)
    print(f"threads={torch.get_num_threads()} batch={BATCH} batches/run={args.batches} repeats={args.repeats}")
    print(f"training step (PGD-10, PreActResNet-18 width 16): {step:.2f} batches/s")
    for name, (extra, mapped) in setups.items():
        rate(ours(extra), 3), rate(plain(mapped), 3)  # warm-up (and the file's pages touched alike)
        a, p = [], []
        for _ in range(args.repeats):  # alternate so machine noise hits both alike
            a.append(rate(ours(extra), args.batches))
            p.append(rate(plain(mapped), args.batches))
        ma, mp = statistics.median(a), statistics.median(p)
        print(f"{name:>26}: atlens {ma:7.1f} batches/s (runs {', '.join(f'{v:.1f}' for v in a)}), plain "
              f"{mp:7.1f} (runs {', '.join(f'{v:.1f}' for v in p)}); ratio atlens/plain {ma / mp:.2f}; "
              f"atlens / step rate {ma / step:.0f}x")


if __name__ == "__main__":
    main()
