"""In-memory image tensors: the form every dataset takes inside atlens.

Adversarial-training datasets are small images (32x32, 64x64), so holding them as one uint8
tensor and augmenting whole batches on the device is far faster than per-image PIL transforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from atlens.seeding import seed_for


@dataclass
class DatasetInfo:
    name: str
    classes: list[str]
    mean: tuple[float, ...] | None  # None (imagefolder): measured on the run's training images
    std: tuple[float, ...] | None
    image_size: int
    channels: int
    crop_padding: int = 0  # default augmentation: random crop with this padding ...
    flip: bool = False  # ... and horizontal flip
    bounds: tuple[float, float] | None = (0.0, 1.0)  # input range attacks must respect (None: unbounded)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class ImageTensors(Dataset):
    """Images as a [N, C, H, W] tensor (uint8 in 0..255 or float in [0, 1]) and int64 labels; ``classes``
    names the labels when known."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str] | None = None) -> None:
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"expected images [N,C,H,W] and labels [N], got {tuple(images.shape)}, "
                             f"{tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.classes = classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_unit_float(self.images[index]), int(self.labels[index])

    def subset(self, indices: torch.Tensor) -> ImageTensors:
        return ImageTensors(self.images[indices], self.labels[indices], self.classes)

    def decoded(self) -> ImageTensors:
        """These examples with their images in memory (image files are decoded now, not when first read)."""
        return self

    def head(self, n: int | None) -> ImageTensors:
        return self if n is None or n >= len(self) else self.subset(torch.arange(n))

    def balanced_indices(self, n: int | None, seed: int = 0) -> torch.Tensor | None:
        """Indices of ``n`` examples with the classes as equally represented as the data allows (a seeded
        draw within each class, taken class by class in turns), in dataset order; None for all of them.
        Datasets sorted by class (image folders) would otherwise give only the first classes."""
        if n is None or n >= len(self):
            return None
        gen = torch.Generator().manual_seed(seed)
        pools = [torch.nonzero(self.labels == c).flatten() for c in self.labels.unique().tolist()]
        pools = [pool[torch.randperm(len(pool), generator=gen)] for pool in pools]
        chosen, depth = [], 0
        while len(chosen) < n:
            chosen += [pool[depth] for pool in pools if depth < len(pool)][: n - len(chosen)]
            depth += 1
        return torch.stack(chosen).sort().values

    def evaluation_indices(self, n: int | None, seed: int = 0) -> torch.Tensor | None:
        """The ``n`` examples every evaluation with this ``seed`` uses (a run's per-epoch evaluation, ``atlens
        eval|cas``, the Python API): ``balanced_indices`` drawn from the seed's evaluation stream."""
        return self.balanced_indices(n, seed_for(seed, "eval_examples"))

    def evaluation_subset(self, n: int | None, seed: int = 0) -> ImageTensors:
        indices = self.evaluation_indices(n, seed)
        return self if indices is None else self.subset(indices)

    def balanced(self, n: int | None, seed: int = 0) -> ImageTensors:
        """``n`` examples, every class as equally represented as the data allows (see ``balanced_indices``)."""
        indices = self.balanced_indices(n, seed)
        return self if indices is None else self.subset(indices)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


def per_class_range(labels: torch.Tensor, per_class: int | None, start: int = 0) -> torch.Tensor:
    """Indices of examples ``start`` to ``start + per_class`` (all from ``start`` when ``per_class`` is
    None) of every class, in dataset order; ``start`` draws disjoint subsets of one dataset.

    Raises ``ValueError`` naming the first class with fewer examples than the range needs."""
    keep = []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        end = len(members) if per_class is None else start + per_class
        if end > len(members) or start >= len(members):
            raise ValueError(f"class {c} has {len(members)} examples, the range needs {max(end, start + 1)}")
        keep.append(members[start:end])
    return torch.cat(keep).sort().values


def split_off(n: int, amount: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of ``range(n)`` into (kept, held-out); ``amount`` is a fraction or a count."""
    count = int(round(amount * n)) if amount < 1 else int(amount)
    if not 0 < count < n:
        raise ValueError(f"validation split of {amount} leaves no training or validation data (n={n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[count:].sort().values, order[:count].sort().values
