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


def _subplots(*args: Any, figsize: tuple[float, float] | None = None, layout: str | None = None,
              **kwargs: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*args, **kwargs)


plt = SimpleNamespace(Figure=Figure, cm=matplotlib.cm, subplots=_subplots,
                      figure=lambda figsize=None: Figure(figsize=figsize), close=lambda fig: None)


def save_figure(fig: Figure, path: Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write ``fig`` as PNG atomically (a reader never sees half a file); ``tight=False`` for layouts that
    tight_layout cannot handle (a colour bar shared by a grid)."""
    if tight:
        fig.tight_layout()
    return atomic_write(path, lambda handle: fig.savefig(handle, dpi=dpi, format="png"))


def format_epsilon(epsilon: float | None) -> str:
    """A budget as researchers write it: 8/255 rather than 0.03137 when it is a whole number of 255ths."""
    if epsilon is None:
        return "–"
    k = epsilon * 255
    return f"{round(k)}/255" if k > 0.5 and abs(k - round(k)) < 1e-6 else f"{epsilon:.4g}"
