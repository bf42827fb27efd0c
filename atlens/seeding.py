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
