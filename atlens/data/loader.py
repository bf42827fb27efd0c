"""Batches from in-memory tensors, with crop+flip augmentation done per batch on the device, and a share of
every batch drawn from extra data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

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


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator,
                     rows: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Random crop of the original size from a zero-padded batch, then random horizontal flip. The offsets and
    flips are drawn on ``generator``'s device. ``rows`` (start, step, n): ``images`` are rows start, start + step, …
    of a batch of n, and the draws are those of the whole batch (a data-parallel rank augments only its shard, as
    one process augments it within the global batch)."""
    start, step, total = rows if rows is not None else (0, 1, len(images))
    n, _, h, w = images.shape
    device = images.device

    def mine(draws: torch.Tensor) -> torch.Tensor:
        return draws[start::step][:n].to(device, non_blocking=True)

    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy = mine(torch.randint(0, 2 * padding + 1, (total,), generator=generator, device=generator.device))
        dx = mine(torch.randint(0, 2 * padding + 1, (total,), generator=generator, device=generator.device))
        row_index = (torch.arange(h, device=device)[None, :] + dy[:, None])[:, None, :, None]
        col_index = (torch.arange(w, device=device)[None, :] + dx[:, None])[:, None, None, :]
        batch = torch.arange(n, device=device)[:, None, None, None]
        channel = torch.arange(images.shape[1], device=device)[None, :, None, None]
        images = padded[batch, channel, row_index, col_index]
    if flip:
        mirrored = mine(torch.rand(total, generator=generator, device=generator.device)) < 0.5
        images = torch.where(mirrored[:, None, None, None], images.flip(3), images)
    return images


@dataclass
class _Staged:
    """A batch on its way to the device: this rank's uint8 rows copied without waiting (from pinned memory on
    CUDA, on a stream of their own), the parts converted and augmented once the step needs them."""

    parts: list[torch.Tensor]
    labels: torch.Tensor
    size: int  # the global batch
    copied: Any = None  # the copy stream's event (CUDA)


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
        augment_generator: torch.Generator | None = None,
        prefetch: bool | None = None,
    ) -> None:
        """``generator`` (on the CPU) orders the examples and draws the extra ones; ``augment_generator`` draws
        the crops and flips: on the device (default: ``generator`` itself on the CPU, a generator of the device
        seeded alike elsewhere). ``prefetch`` (default: on CUDA) prepares the next batch while a step runs."""
        self.data = data
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.crop_padding = crop_padding
        self.flip = flip
        self.generator = generator or torch.Generator().manual_seed(0)
        if augment_generator is None:
            augment_generator = (self.generator if self.device.type == "cpu" else
                                 torch.Generator(self.device).manual_seed(self.generator.initial_seed()))
        self.augment_generator = augment_generator
        self.prefetch = self.device.type == "cuda" if prefetch is None else prefetch
        self.rank, self.world = shard
        self.drop_last = drop_last
        self.extra = extra if extra is not None and extra.fraction > 0 else None
        # labelled examples per batch: the whole batch, or what the extra data's share leaves
        self.labelled = self.extra.labelled_per_batch(batch_size) if self.extra else batch_size
        self.epoch_examples = epoch_examples
        self._pin = self.device.type == "cuda"
        self._copies = torch.cuda.Stream(self.device) if self._pin else None

    def seed(self, seed: int) -> None:
        """Reseed the order, the extra draws and the augmentation (the loop does so every epoch)."""
        self.generator.manual_seed(seed)
        if self.augment_generator is not self.generator:
            self.augment_generator.manual_seed(seed)

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
        staged = (self._stage(idx) for idx in self.labelled_indices())
        if not self.prefetch:
            for batch in staged:
                yield self._finish(batch)
            return
        following = next(staged, None)
        while following is not None:
            current, following = following, next(staged, None)  # the next batch's rows travel during this step
            yield self._finish(current)

    def _to_device(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows.pin_memory() if self._pin else rows).to(self.device, non_blocking=True)

    def _stage(self, idx: torch.Tensor) -> _Staged:
        """Gather this rank's rows of a global batch — its labelled examples ``idx`` and the extra examples
        drawn for the whole batch — as stored (uint8 images), and start their copy to the device. A rank keeps
        positions rank, rank + world, … of the global batch (labelled examples first, then extra ones)."""
        rank, world = self.rank, self.world
        mine = idx[rank::world]
        parts, labels = [self.data.images[mine]], [self.data.labels[mine]]
        if self.extra is not None:  # the batch is filled up from the extra data; the draws are the whole batch's
            drawn = self.extra.sampler.draw(self.batch_size - len(idx), self.generator)
            images, extra_labels = self.extra.data.batch(drawn[(rank - len(idx)) % world :: world])
            parts.append(images)
            labels.append(extra_labels)
        size = len(idx) + (self.batch_size - len(idx) if self.extra is not None else 0)
        stream = torch.cuda.stream(self._copies) if self._copies is not None else nullcontext()
        with stream:
            staged = _Staged([self._to_device(part) for part in parts], self._to_device(torch.cat(labels)), size)
            if self._copies is not None:
                staged.copied = self._copies.record_event()
        return staged

    def _finish(self, staged: _Staged) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert (uint8 → [0, 1] on the device) and augment a staged batch."""
        if staged.copied is not None:
            torch.cuda.current_stream(self.device).wait_event(staged.copied)
            for tensor in (*staged.parts, staged.labels):  # the copy stream's memory is in use on this stream now
                tensor.record_stream(torch.cuda.current_stream(self.device))
        x = torch.cat([to_unit_float(part) for part in staged.parts])
        if self.crop_padding or self.flip:
            x = random_crop_flip(x, self.crop_padding, self.flip, self.augment_generator,
                                 rows=(self.rank, self.world, staged.size))
        return x, staged.labels
