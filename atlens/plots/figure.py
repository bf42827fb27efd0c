"""Figures without pyplot: atlens never chooses or switches a matplotlib backend.

Figures are made from matplotlib's object API (``matplotlib.figure.Figure``), which renders to files
without a GUI backend and without registering with pyplot, so importing atlens in a notebook leaves
its backend and its open figures alone. ``plt`` offers the few pyplot entry points atlens uses.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib.cm
from matplotlib.figure import Figure

from atlens.files import atomic_write


def _subplots(*args: Any, figsize: tuple[float, float] | None = None, **kwargs: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


plt = SimpleNamespace(Figure=Figure, cm=matplotlib.cm, subplots=_subplots,
                      figure=lambda figsize=None: Figure(figsize=figsize), close=lambda fig: None)


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG atomically (a reader never sees half a file)."""
    fig.tight_layout()
    return atomic_write(path, lambda handle: fig.savefig(handle, dpi=dpi, format="png"))
