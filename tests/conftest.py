from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atlens.data import load_dataset
from atlens.models import ImageClassifier, Normalize, build_model

torch.set_num_threads(2)

# a valid 1x1 PNG: what a figure file holds in tests that do not look at figures
TINY_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")
TINY_PNG += bytes.fromhex("1f15c4890000000d49444154789c63f8ffff3f0005fe02fea7d6a4a10000000049454e44ae426082")


@pytest.fixture(autouse=True)
def unrendered_figures(request, monkeypatch):
    """Figures are built — every plotting call runs — but not rendered to pixels, which costs most of a small
    run's time; tests marked ``figures`` (tests/test_figures.py) render them and look at them."""
    if request.node.get_closest_marker("figures"):
        return
    from matplotlib.figure import Figure

    def savefig(self, target, **kwargs):
        if hasattr(target, "write"):
            target.write(TINY_PNG)
        else:
            with open(target, "wb") as handle:
                handle.write(TINY_PNG)

    monkeypatch.setattr(Figure, "savefig", savefig)
    monkeypatch.setattr(Figure, "tight_layout", lambda self, *args, **kwargs: None)


def linear_classifier(weight: torch.Tensor, bias: torch.Tensor | None = None) -> ImageClassifier:
    """An ImageClassifier whose features are the flattened input and whose head is ``weight``."""
    k, d = weight.shape
    model = ImageClassifier(Normalize([0.0], [1.0]), nn.Flatten(), d, k)
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias if bias is not None else torch.zeros(k))
    return model.eval()


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="session")
def trained_digits_model(digits):
    """A standard-trained MLP on scikit-learn's digits (about 95% clean accuracy)."""
    train, _ = digits
    torch.manual_seed(0)
    model = build_model("mlp", 10, 1, 8, [0.3], [0.38], {"hidden": [64]})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = train.images, train.labels
    for _ in range(60):
        for idx in torch.randperm(len(y)).split(128):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def synthetic_config(**overrides) -> dict:
    """A run config small enough to train in seconds on CPU."""
    cfg = {
        "seed": 0,
        "data": {"name": "synthetic", "classes": 4, "image_size": 8, "channels": 1, "train_size": 256,
                 "test_size": 128, "noise": 0.1, "batch_size": 64},
        "model": {"name": "cnn", "width": 8, "hidden": 16},
        "attack": {"epsilon": 0.05, "steps": 3},
        "objective": {"name": "pgd_at"},
        "optim": {"epochs": 4, "lr": 0.05},
        "eval": {"steps": 5, "examples": 128},
        "runtime": {"progress": False, "threads": 2},
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition(".")
        if leaf:
            cfg.setdefault(section, {})[leaf] = value
        else:
            cfg[section] = value
    return cfg


def train_run(path, callbacks=(), **overrides):
    """Train a synthetic_config run into ``path`` (resuming it if it holds one); (run, summary)."""
    from atlens.config import config_from_dict
    from atlens.runs import RunDirectory
    from atlens.training.run import train_to_completion

    summary = train_to_completion(config_from_dict(synthetic_config(**overrides)), path, callbacks=callbacks,
                                  log=lambda message: None)
    return RunDirectory(path), summary


def fake_scontrol(folder):
    """An ``scontrol`` in ``folder``/bin that records its arguments, one line per call; (that bin folder, the file
    of calls)."""
    import stat

    bin_folder, calls = folder / "bin", folder / "scontrol-calls"
    bin_folder.mkdir()
    script = bin_folder / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_folder, calls


class Interrupt(Exception):
    """Raised by StopAfter to emulate a crash or Ctrl-C."""


def stop_after(epoch: int):
    """A callback that interrupts a run at the end of epoch ``epoch``, after its evaluation and before
    its metrics and checkpoint are written (as a crash there would): the run resumes from epoch - 1."""
    from atlens.hooks import Callback

    class StopAfter(Callback):
        def on_epoch_end(self, loop, row):
            if loop.epoch == epoch:
                raise Interrupt

    return StopAfter()


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def tiny_imagefolder(root, train_per_class: int = 4, test_per_class: int = 2, size: int = 32):
    """A CIFAR-10-shaped ImageFolder tree of random PNGs (train/<class>/, test/<class>/), for commands that read
    one; returns ``root``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CIFAR10_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                pixels[:, :, label % 3] //= 2  # a faint class signal
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root

