"""atlens: adversarial training, evaluation and analysis of robust image classifiers.

The functions below are imported on first use, so ``import atlens`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {"load_dataset": "atlens.data", "wrap": "atlens.models", "load_model": "atlens.api", "evaluate": "atlens.api",
        "cas": "atlens.api", "instance_cas": "atlens.api", "train": "atlens.api"}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'atlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
