"""Progress on long work: a bar on a terminal, plain lines elsewhere (logs, pipes, SLURM), never carriage returns
in a file."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, unit: str = "batch", total: int | None = None) -> Iterable[T]:
    """``iterable`` with progress shown: a tqdm bar on a terminal; off one, a line when it starts and one when
    it ends."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, unit=unit, total=total, leave=False)
    return _lines(iterable, desc, unit, total)


PLURALS = {"batch": "batches"}  # the units progress counts in whose plural is not unit + s


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in the number it takes: 1 epoch, 3 epochs, 1 batch, 2 batches (``plural``: the noun's
    plural when it is not noun + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


EVERY = 30.0  # seconds between the lines that say how far long work has come, off a terminal


def _lines(iterable: Iterable[T], desc: str, unit: str, total: int | None) -> Iterator[T]:
    size = f" ({count(total, unit, PLURALS.get(unit))})" if total else ""
    print(f"{desc}{size} ...", file=sys.stderr, flush=True)
    started = last = time.perf_counter()
    for done, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if now - last >= EVERY and (total is None or done < total):  # a log that goes quiet looks like a hang
            last = now
            left = f", about {duration((now - started) / done * (total - done))} left" if total else ""
            print(f"{desc}: {done}{f'/{total}' if total else ''} after {duration(now - started)}{left}",
                  file=sys.stderr, flush=True)
    print(f"{desc}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """A time as an estimate says it: 40 s, 12 min, 1.5 h."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    return f"{seconds / 3600:.1f} h"
