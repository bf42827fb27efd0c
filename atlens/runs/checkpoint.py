"""Checkpoints: written atomically, read without unpickling code (``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from atlens.errors import CheckpointError
from atlens.files import atomic_write
from atlens.models.weights import (
    load_torch_file,
    load_weights,  # noqa: F401 (re-exported by atlens.runs)
)

# 2: random streams derived from (seed, stream, rank, epoch), no RNG state; callbacks' states under "callbacks"
FORMAT = "atlens-checkpoint-2"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    atomic_write(path, lambda handle: torch.save({"format": FORMAT, **state}, handle))


# formats whose weights (model_spec and model) are still read by load_model; only FORMAT resumes
WEIGHTS_FORMATS = (FORMAT, "atlens-checkpoint-1")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    formats: tuple[str, ...] = (FORMAT,)) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    state = load_torch_file(path, map_location, refusal="atlens never runs code from a checkpoint, so it is refused",
                            damaged="damaged or truncated", after=_others(path))
    found = state.get("format") if isinstance(state, dict) else None
    if isinstance(found, str) and found.startswith("atlens-checkpoint-") and found not in formats:
        raise CheckpointError(
            f"{path} was written by an older atlens ({found}; this version reads {FORMAT}, whose runs draw their "
            f"random numbers differently). Its run cannot be resumed here: retrain it, or load its weights "
            f"with an atlens release that wrote it")
    if found not in formats:
        raise CheckpointError(f"{path} is not an atlens checkpoint (expected format {FORMAT})")
    return state


def _others(path: Path) -> str:
    """The other checkpoints beside ``path`` that could be used instead."""
    others = sorted(p.stem for p in path.parent.glob("*.pt") if p != path)
    if not others:
        return ""
    resume = " (to resume from one, copy it over last.pt)" if path.name == "last.pt" else ""
    return f". Other checkpoints here: {', '.join(others[:8])}{resume}"
