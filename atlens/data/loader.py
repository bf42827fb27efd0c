"""Batches from in-memory tensors, with crop+flip augmentation done per batch on the device."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from atlens.data.tensors import ImageTensors, to_unit_float


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

    def __len__(self) -> int:
        return len(self.data) // self.batch_size if self.drop_last else -(-len(self.data) // self.batch_size)

    @property
    def last_batch(self) -> int:
        """Examples in the last batch of an epoch."""
        remainder = len(self.data) % self.batch_size
        return self.batch_size if remainder == 0 or self.drop_last else remainder

    def global_size(self, index: int) -> int:
        """Examples in batch ``index`` of an epoch over all ranks (what one process would hold)."""
        return min(self.batch_size, len(self.data) - index * self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        end = n - n % self.batch_size if self.drop_last else n
        for start in range(0, end, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = to_unit_float(self.data.images[idx].to(self.device, non_blocking=True))
            y = self.data.labels[idx].to(self.device, non_blocking=True)
            if self.crop_padding or self.flip:
                x = random_crop_flip(x, self.crop_padding, self.flip, self.generator)
            if self.world > 1:
                # every rank draws the whole global batch, so sharded training sees the same
                # batches and augmentations as one process with the same global batch size
                x, y = x[self.rank :: self.world], y[self.rank :: self.world]
            yield x, y
