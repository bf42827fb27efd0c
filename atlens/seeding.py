"""Explicit randomness: every random stream of a run is derived from (seed, stream name, ids).

A stream's seed is a hash of its position, so a resumed run needs nothing but the epoch to draw
what the uninterrupted run drew, every data-parallel rank has its own stream without arithmetic
that could collide with a neighbouring seed's, and no RNG state has to travel in checkpoints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def seed_for(seed: int, stream: str, *ids: int) -> int:
    """A 63-bit seed for ``stream`` (e.g. "attack") at ``ids`` (e.g. rank, epoch) of a run seeded ``seed``."""
    digest = hashlib.blake2b(repr((int(seed), stream, *map(int, ids))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(seed: int, stream: str, *ids: int) -> torch.Generator:
    """A CPU generator for a derived stream."""
    return torch.Generator().manual_seed(seed_for(seed, stream, *ids))


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Inside the block the global RNG (and the CUDA device's) starts from ``seed``; outside it is
    untouched, so side computations never shift another stream."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class Noise:
    """Where an attack's random start comes from.

    ``Noise()`` draws from torch's global generator (seeded by the caller, e.g. with ``seeded``). A noise
    source with a ``generator`` draws for the whole global batch of ``batch`` examples and keeps this rank's
    rows (``rank::world``, as ``BatchLoader`` shards), so data-parallel ranks together draw exactly what one
    process draws for the same global batch, and a run's starts never depend on how many processes train it.
    """

    def __init__(self, generator: torch.Generator | None = None, rank: int = 0, world: int = 1,
                 batch: int | None = None) -> None:
        self.generator, self.rank, self.world, self.batch = generator, rank, world, batch

    def _global(self, like: torch.Tensor, tail: tuple[int, ...]) -> tuple[int, ...]:
        n = self.batch if self.batch is not None else len(like) * self.world
        return (n, *tail)

    def _mine(self, full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return full[self.rank :: self.world].to(like.device)

    def uniform(self, like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """Uniform in [low, high), shaped like ``like``."""
        if self.generator is None:
            return torch.empty_like(like).uniform_(low, high)
        full = torch.empty(self._global(like, tuple(like.shape[1:])), dtype=like.dtype,
                           device=self.generator.device).uniform_(low, high, generator=self.generator)
        return self._mine(full, like)

    def normal(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal, shaped like ``like``."""
        if self.generator is None:
            return torch.randn_like(like)
        full = torch.randn(self._global(like, tuple(like.shape[1:])), dtype=like.dtype,
                           device=self.generator.device, generator=self.generator)
        return self._mine(full, like)

    def per_example(self, like: torch.Tensor) -> torch.Tensor:
        """One uniform [0, 1) value per example, shaped (n, 1, …, 1) to broadcast against ``like``."""
        tail = (1,) * (like.dim() - 1)
        if self.generator is None:
            return torch.rand(len(like), *tail, device=like.device, dtype=like.dtype)
        full = torch.rand(self._global(like, tail), dtype=like.dtype, device=self.generator.device,
                          generator=self.generator)
        return self._mine(full, like)


GLOBAL_NOISE = Noise()
