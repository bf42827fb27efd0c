"""The one rule of everything that writes results (the CLI and the Python API alike): an earlier result is never
replaced silently, and never lost.

``replacing(folder, files, overwrite)`` guards the work that writes ``files`` into ``folder``: without
``overwrite`` it stops before any work when one of them exists; with it, the earlier files (and the figure beside
each JSON) are kept as ``<name>.replaced-<time><suffix>``, and if the work does not finish (an error, Ctrl-C), the
earlier files are put back in place of whatever part of their replacement was written — an interrupted command
leaves the old result as it was, JSON and figure together.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from atlens.errors import ConfigError

REPLACED = ".replaced-"  # what the name of a set-aside result holds; readers of a folder skip such files


def is_replaced(path: Path) -> bool:
    return REPLACED in path.name


@contextmanager
def replacing(folder: str | Path, files: list[str], overwrite: bool = False) -> Iterator[None]:
    """Run the body that writes ``files`` into ``folder`` under the rule above."""
    folder = Path(folder)
    existing = [folder / f for f in files if (folder / f).exists()]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise ConfigError(f"{folder} already holds {names}; pass --overwrite (overwrite=True) to write new results "
                          f"(the earlier ones are kept as <name>{REPLACED}<time>), or choose another checkpoint or "
                          f"output folder")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved: list[tuple[Path, Path]] = []
    for path in existing:
        for companion in [path, path.with_suffix(".png")] if path.suffix == ".json" else [path]:
            if companion.exists() and all(companion != original for original, _ in moved):
                aside = companion.with_name(f"{companion.stem}{REPLACED}{stamp}{companion.suffix}")
                companion.rename(aside)
                moved.append((companion, aside))
    try:
        yield
    except BaseException:
        for original, aside in moved:  # the new result never completed: the old one stays the result
            aside.replace(original)
        raise
