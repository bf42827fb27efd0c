"""Weight averaging with ``torch.optim.swa_utils``: SWA, iSWA (Chen et al. A1.6) and EMA.

The averaged model is the one evaluated, checkpointed and analysed once averaging has started.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from atlens.errors import ConfigError
from atlens.registry import Registry


class WeightAveraging:
    name = "none"

    def __init__(self, start: float | None = None) -> None:
        self.start = start
        self.averaged: AveragedModel | None = None

    def start_epoch(self, epochs: int, milestones: list[float]) -> int:
        """First epoch (1-based) that is averaged: ``start`` as a fraction of the run, or by default
        the epoch after the first learning-rate decay (the reference: 55 with decays at 50/150)."""
        if self.start is not None:
            return max(1, round(self.start * epochs)) if self.start < 1 else int(self.start)
        first_decay = round(min(milestones) * epochs) if milestones else 0
        return first_decay + 1

    def _ensure(self, model: nn.Module) -> AveragedModel:
        raise NotImplementedError

    def after_step(self, model: nn.Module, epoch: int, epochs: int, milestones: list[float]) -> None:
        """Called after every optimiser step (EMA averages here)."""

    def after_epoch(self, model: nn.Module, epoch: int, epochs: int, milestones: list[float],
                    bn_data: Iterable) -> None:
        """Called after every epoch's training (SWA and iSWA average here)."""

    def evaluated(self, model: nn.Module) -> nn.Module:
        return self.averaged.module if self.averaged is not None else model

    def state_dict(self) -> dict[str, Any] | None:
        return self.averaged.state_dict() if self.averaged is not None else None

    def load_state_dict(self, model: nn.Module, state: dict[str, Any] | None) -> None:
        if state is not None:
            self._ensure(model).load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


AVERAGING: Registry[WeightAveraging] = Registry("averaging")


@AVERAGING.register("none")
def _none() -> WeightAveraging:
    return WeightAveraging()


@AVERAGING.register("swa")
class SWA(WeightAveraging):
    """Equal-weight average of the end-of-epoch weights from the start epoch, BatchNorm statistics
    recomputed on (clean) training batches after each update."""

    name = "swa"

    def __init__(self, start: float | None = None, period: int = 1) -> None:
        super().__init__(start)
        if period < 1 or (start is not None and start <= 0):
            raise ConfigError("averaging swa needs period >= 1 and start > 0")
        self.period = period

    def _ensure(self, model: nn.Module) -> AveragedModel:
        if self.averaged is None:
            self.averaged = AveragedModel(model)
        return self.averaged

    def after_epoch(self, model: nn.Module, epoch: int, epochs: int, milestones: list[float],
                    bn_data: Iterable) -> None:
        first = self.start_epoch(epochs, milestones)
        if epoch < first or (epoch - first) % self.period:
            return
        averaged = self._ensure(model)
        averaged.update_parameters(model)
        update_bn(bn_data, averaged, device=next(model.parameters()).device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "period": self.period}


@AVERAGING.register("iswa")
class ISWA(SWA):
    """SWA whose average is copied back into the model, so the next epoch's SGD starts from it."""

    name = "iswa"

    def after_epoch(self, model: nn.Module, epoch: int, epochs: int, milestones: list[float],
                    bn_data: Iterable) -> None:
        before = self.averaged.n_averaged.item() if self.averaged is not None else 0
        super().after_epoch(model, epoch, epochs, milestones, bn_data)
        if self.averaged is not None and self.averaged.n_averaged.item() > before:
            with torch.no_grad():
                for target, source in zip(model.state_dict().values(), self.averaged.module.state_dict().values()):
                    target.copy_(source)


@AVERAGING.register("ema")
class EMA(WeightAveraging):
    """Exponential moving average of weights and buffers, updated after every step."""

    name = "ema"

    def __init__(self, decay: float = 0.999, start: float | None = 0.0) -> None:
        super().__init__(start)
        if not 0 < decay < 1:
            raise ConfigError(f"averaging.decay must be in (0, 1), got {decay}")
        self.decay = decay

    def _ensure(self, model: nn.Module) -> AveragedModel:
        if self.averaged is None:
            self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        return self.averaged

    def start_epoch(self, epochs: int, milestones: list[float]) -> int:
        return 1 if not self.start else super().start_epoch(epochs, milestones)

    def after_step(self, model: nn.Module, epoch: int, epochs: int, milestones: list[float]) -> None:
        if epoch >= self.start_epoch(epochs, milestones):
            self._ensure(model).update_parameters(model)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "decay": self.decay, "start": self.start}
