"""The model contract: inputs in [0,1], normalisation inside, ``features(x)`` and a linear ``head``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from atlens.errors import ModelContractError


class Normalize(nn.Module):
    """Per-channel normalisation as the first layer, so checkpoints never depend on outside code."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """``model(x) == head(features(x))`` with ``features = body(normalize(x))``."""

    def __init__(self, normalize: Normalize, body: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.normalize = normalize
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def check_contract(model: nn.Module) -> nn.Linear:
    """Return the model's linear head, or explain why the model cannot be analysed."""
    if not callable(getattr(model, "features", None)):
        raise ModelContractError(
            f"{type(model).__name__} has no features(x) method; feature analyses need the penultimate "
            f"representation (wrap the model in atlens.models.ImageClassifier)"
        )
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ModelContractError(
            f"{type(model).__name__}.head must be an nn.Linear mapping features to logits, "
            f"got {type(head).__name__}"
        )
    return head


@dataclass
class Forward:
    """One forward pass: the logits, the head's input (None for a model without the contract) and the
    head's weights at that moment (attributions must use the weights the logits were computed with)."""

    logits: torch.Tensor
    features: torch.Tensor | None
    head_weight: torch.Tensor | None


def forward_with_features(model: nn.Module, x: torch.Tensor) -> Forward:
    """``model(x)`` together with the features its head saw, in one forward. ``model`` may be a wrapper
    (DistributedDataParallel) whose ``module`` honours the contract; the hook lives only for this call."""
    inner = getattr(model, "module", model)
    head = getattr(inner, "head", None)
    if not (isinstance(head, nn.Linear) and callable(getattr(inner, "features", None))):
        return Forward(model(x), None, None)
    seen: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return Forward(logits, seen[-1] if seen else None, head.weight.detach().clone())


def prefers_channels_last(model: nn.Module) -> bool:
    """NHWC pays for convolutional networks on CUDA and on CPU alike (oneDNN; see BENCHMARKS.md) — but not for
    convolutions with fewer than 8 output channels, where oneDNN's NHWC backward falls to a path hundreds of
    times slower on CPU (a PreActResNet-18 of width 4: over a minute for one PGD-5 step on 16 images against
    under a second in NCHW)."""
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return bool(convolutions) and min(m.out_channels for m in convolutions) >= 8


def import_timm() -> Any:
    """timm, imported without the deprecation warnings some releases trigger on import (timm 1.0.9, which
    RobustBench pins, declares a TorchScript interface that torch 2.10+ deprecates): noise a user cannot act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.interface.*", category=FutureWarning)
        import timm
        import timm.models.vision_transformer  # noqa: F401
    return timm
