"""Deliberate host reads on the training path.

The training step never waits for the device, with one kind of exception: a value the host needs to decide what
to run next (RWP stops ascending once no example of the global batch is below c_min; running the remaining
ascent steps instead would cost a forward and a backward pass each). Such a read is made inside
``deliberate_host_read``, which names it and exempts it from ``torch.cuda.set_sync_debug_mode`` (and from the
test suite's guard, which asks ``reading_deliberately``); anything else that waits for the device is an error
under either check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_reasons: list[str] = []


@contextmanager
def deliberate_host_read(reason: str) -> Iterator[None]:
    """A host read of device values that is meant to happen (``reason`` says why)."""
    mode = torch.cuda.get_sync_debug_mode() if torch.cuda.is_available() else 0
    if mode:
        torch.cuda.set_sync_debug_mode(0)
    _reasons.append(reason)
    try:
        yield
    finally:
        _reasons.pop()
        if mode:
            torch.cuda.set_sync_debug_mode(mode)


def reading_deliberately() -> bool:
    return bool(_reasons)
