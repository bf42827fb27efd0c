"""A run's splits: a registered dataset, its per-class subset, validation split and label noise."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from atlens.data.extra import ExtraData, load_extra
from atlens.data.sources import DATASETS, channel_stats, folder_split
from atlens.data.tensors import DatasetInfo, ImageTensors, per_class_range, split_off
from atlens.errors import ConfigError
from atlens.seeding import generator, seed_for


@dataclass
class PreparedData:
    info: DatasetInfo
    train: ImageTensors
    test: ImageTensors
    val: ImageTensors | None
    val_indices: list[int] | None  # indices into the (per-class subset of the) training split
    # inputs of the training split outside the training subset, without their labels (data.unlabelled)
    unlabelled: torch.Tensor | None = None
    extra: ExtraData | None = None  # extra training data (extra.source), labelled or awaiting pseudo-labels


def prepare_data(
    name: str,
    root: str | None = None,
    download: bool = False,
    val_split: float = 0.0,
    per_class: int | None = None,
    seed: int = 0,
    options: dict | None = None,
    label_noise: float = 0.0,
    per_class_start: int = 0,
    unlabelled: int = 0,
    extra: str | None = None,
    extra_take: int | None = None,
) -> PreparedData:
    """Train / optional validation / test splits of a registered dataset. ``per_class`` examples of each
    class from its ``per_class_start``-th on form the training split; ``unlabelled`` inputs drawn (seeded)
    from the rest of it are kept without labels; ``label_noise`` replaces a seeded fraction of the training
    labels (not validation or test) by a different random class. ``extra`` opens extra training data
    (``atlens.data.extra``; ``rest`` is the training split outside the training subset), ``extra_take`` of it."""
    info, splits = DATASETS.build(name, options or {}, "data", root=root, download=download)
    full = train = splits["train"]
    chosen = torch.arange(len(full))
    if per_class is not None or per_class_start:
        try:
            chosen = per_class_range(full.labels, per_class, per_class_start)
        except ValueError as err:
            raise ConfigError(
                f"data.per_class_start={per_class_start}, data.per_class={per_class}: {err} in the training "
                f"split of {name!r}; lower data.per_class_start or data.per_class") from None
        train = full.subset(chosen)
    if info.mean is None or info.std is None:  # measured on the labelled training images (before val_split)
        mean, std = channel_stats(train.images)
        info = replace(info, mean=mean, std=std)
    unlabelled_inputs = None
    rest = torch.ones(len(full), dtype=torch.bool)
    rest[chosen] = False
    rest = torch.nonzero(rest).flatten()
    if unlabelled:
        if len(rest) < unlabelled:
            raise ConfigError(
                f"data.unlabelled={unlabelled}: only {len(rest)} inputs of the training split of {name!r} lie "
                f"outside the training subset; lower data.unlabelled or train on fewer (data.per_class)")
        drawn = rest[torch.randperm(len(rest), generator=generator(seed, "unlabelled"))[:unlabelled]].sort().values
        unlabelled_inputs = full.subset(drawn).images
    val, val_indices = None, None
    if val_split:
        try:
            kept, held = split_off(len(train), val_split, seed_for(seed, "val_split"))
        except ValueError as err:
            raise ConfigError(f"data.val_split: {err}") from None
        train, val, val_indices = train.subset(kept), train.subset(held), held.tolist()
    if label_noise:
        train = ImageTensors(train.images, noisy_labels(train.labels, info.num_classes, label_noise, seed))
    extra_data = None
    if extra:
        def image_folder(path: Path, classes: list[str]) -> ImageTensors:
            return folder_split(path, classes, info.image_size)

        opened = load_extra(extra, info.classes, info.image_size, info.channels, full.subset(rest), image_folder)
        extra_data = opened.take(extra_take, seed)
    return PreparedData(info, train, splits["test"], val, val_indices, unlabelled_inputs, extra_data)


def noisy_labels(labels: torch.Tensor, num_classes: int, fraction: float, seed: int) -> torch.Tensor:
    gen = generator(seed, "label_noise")
    flip = torch.randperm(len(labels), generator=gen)[: round(fraction * len(labels))]
    shift = torch.randint(1, num_classes, (len(flip),), generator=gen)
    noisy = labels.clone()
    noisy[flip] = (labels[flip] + shift) % num_classes
    return noisy


def load_dataset(name: str, split: str = "test", **options) -> ImageTensors:
    """A split ("train", "val" or "test") of a dataset as (image in [0,1], label) pairs.

    Keyword options are those of :func:`prepare_data` (root, download, val_split, per_class,
    per_class_start, unlabelled, seed) plus the dataset's own options (e.g. ``classes`` for ``synthetic``).
    """
    shared = ("root", "download", "val_split", "per_class", "per_class_start", "unlabelled", "seed")
    common = {k: options.pop(k) for k in shared if k in options}
    data = prepare_data(name, options=options, **common)
    chosen = {"train": data.train, "test": data.test, "val": data.val}.get(split, "unknown")
    if chosen == "unknown":
        raise ConfigError(f"unknown split {split!r}; available: train, val, test")
    if chosen is None:
        raise ConfigError("split 'val' needs val_split > 0")
    return ImageTensors(chosen.images, chosen.labels, data.info.classes)

