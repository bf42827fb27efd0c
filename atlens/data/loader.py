"""Batches from in-memory tensors, with crop+flip augmentation done per batch on the device, and a share of
every batch drawn from extra data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from atlens.data.extra import ExtraData
from atlens.data.tensors import ImageTensors, to_unit_float


class Sampler(Protocol):
    """Which extra examples a batch takes: ``draw(n, generator)`` returns n indices into the extra data."""

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


@dataclass
class ExtraStream:
    """``fraction`` of every global batch drawn from ``data`` by ``sampler`` (with replacement, as the
    references do); the rest of the batch comes from the labelled set."""

    data: ExtraData
    fraction: float
    sampler: Sampler

    def labelled_per_batch(self, batch_size: int) -> int:
        return max(1, batch_size - round(self.fraction * batch_size))


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the original size from a zero-padded batch, then random horizontal flip."""
    n, _, h, w = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
        rows = (torch.arange(h, device=images.device)[None, :] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w, device=images.device)[None, :] + dx[:, None])[:, None, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        images = padded[batch, channel, rows, cols]
    if flip:
        mirrored = torch.rand(n, generator=generator).to(images.device) < 0.5
        images = torch.where(mirrored[:, None, None, None], images.flip(3), images)
    return images


class BatchLoader:
    """Iterates (x in [0,1], y) batches on ``device``; shuffling and augmentation use ``generator``.

    The generator's state is part of a training checkpoint, which is what makes a resumed run
    draw the same batches as an uninterrupted one.
    """

    def __init__(
        self,
        data: ImageTensors,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),  # (rank, world size): batch_size is the global batch
        drop_last: bool = False,
        extra: ExtraStream | None = None,
        epoch_examples: int | None = None,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.crop_padding = crop_padding
        self.flip = flip
        self.generator = generator or torch.Generator().manual_seed(0)
        self.rank, self.world = shard
        self.drop_last = drop_last
        self.extra = extra if extra is not None and extra.fraction > 0 else None
        # labelled examples per batch: the whole batch, or what the extra data's share leaves
        self.labelled = self.extra.labelled_per_batch(batch_size) if self.extra else batch_size
        self.epoch_examples = epoch_examples

    @property
    def batches_per_pass(self) -> int:
        """Batches in one pass over the labelled set."""
        n = len(self.data)
        return n // self.labelled if self.drop_last else -(-n // self.labelled)

    def __len__(self) -> int:
        """Batches in an epoch: one pass over the labelled set, or ⌈epoch_examples / batch_size⌉."""
        if self.epoch_examples is None:
            return self.batches_per_pass
        return -(-self.epoch_examples // self.batch_size)

    @property
    def last_batch(self) -> int:
        """Examples in the last batch of an epoch (with extra data, every batch is filled up to batch_size)."""
        remainder = len(self.data) % self.labelled
        return self.batch_size if remainder == 0 or self.drop_last or self.extra else remainder

    def global_size(self, index: int) -> int:
        """Examples in batch ``index`` of an epoch over all ranks (what one process would hold)."""
        start = index % self.batches_per_pass * self.batch_size
        return self.batch_size if self.extra else min(self.batch_size, len(self.data) - start)

    def labelled_indices(self) -> Iterator[torch.Tensor]:
        """The labelled examples of each batch of an epoch: consecutive slices of a permutation of the labelled
        set, and of a fresh one whenever it runs out before the epoch ends (the semi-supervised references'
        sampler), cut off after ``len(self)`` batches."""
        n, batches = len(self.data), len(self)
        end = n - n % self.labelled if self.drop_last else n
        made = 0
        while made < batches and end > 0:
            order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
            for start in range(0, end, self.labelled)[: batches - made]:
                yield order[start : start + self.labelled]
                made += 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.labelled_indices():
            x = to_unit_float(self.data.images[idx].to(self.device, non_blocking=True))
            y = self.data.labels[idx].to(self.device, non_blocking=True)
            if self.extra is not None:  # the batch is filled up from the extra data
                drawn = self.extra.sampler.draw(self.batch_size - len(idx), self.generator)
                extra_x, extra_y = self.extra.data.batch(drawn)
                x = torch.cat([x, extra_x.to(self.device, non_blocking=True)])
                y = torch.cat([y, extra_y.to(self.device, non_blocking=True)])
            if self.crop_padding or self.flip:
                x = random_crop_flip(x, self.crop_padding, self.flip, self.generator)
            if self.world > 1:
                # every rank draws the whole global batch, so sharded training sees the same
                # batches and augmentations as one process with the same global batch size
                x, y = x[self.rank :: self.world], y[self.rank :: self.world]
            yield x, y
