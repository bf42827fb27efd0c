"""Weight averaging with ``torch.optim.swa_utils``: SWA, iSWA (Chen et al. A1.6) and EMA, as callbacks.

The averaged model is the one evaluated, checkpointed and analysed once averaging has started
(``loop.evaluated``). When averaging starts is resolved once, at construction, from the run length.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from atlens.data import BatchLoader
from atlens.hooks import Callback
from atlens.registry import Registry
from atlens.seeding import seed_for


def first_averaged_epoch(start: float | None, epochs: int, milestones: list[float]) -> int:
    """The first (1-based) epoch whose weights are averaged.

    ``start`` follows the reference's 0-based ``epoch >= swa_start``: a fraction of the run (0.275 of
    200 epochs is index 55, the 56th epoch) or an epoch index >= 1. By default, the first epoch trained
    at the decayed learning rate (the epoch after the first decay boundary)."""
    if start is None:
        index = round(min(milestones) * epochs) if milestones else 0
    else:
        index = round(start * epochs) if start < 1 else int(start)
    return index + 1


class WeightAveraging(Callback):

    phase = "averaging"
    name = "none"

    def __init__(self, epochs: int = 0, milestones: list[float] | None = None, start: float | None = None) -> None:
        """``epochs`` and ``milestones`` (the run's, given to builders that take them) place ``start``."""
        milestones = list(milestones or [])
        self.start = start
        self.first_epoch = first_averaged_epoch(start, epochs, milestones)
        self.averaged: AveragedModel | None = None
        self._pending: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return "averaging"

    def _ensure(self, model: nn.Module) -> AveragedModel:
        raise NotImplementedError

    def _publish(self, loop: Any, row: dict[str, Any] | None = None) -> None:
        if self.averaged is not None:
            loop.evaluated = self.averaged.module
        if row is not None and self.name != "none":
            row["evaluated_model"] = self.name if self.averaged is not None else "model"

    def on_fit_start(self, loop: Any) -> None:
        if self._pending is not None:
            self._ensure(loop.model).load_state_dict(self._pending)
            self._pending = None
        self._publish(loop)

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        self._publish(loop, row)

    def state_dict(self) -> dict[str, Any] | None:
        return self.averaged.state_dict() if self.averaged is not None else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state  # the averaged copy is built from the model in on_fit_start

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


AVERAGING: Registry[WeightAveraging] = Registry("averaging", skip=("epochs", "milestones"))
BN_DATA = ("augmented", "clean")


def batchnorm_batches(loop: Any, augmented: bool) -> BatchLoader:
    """The training split in the training loader's batches (its last batch dropped when training drops it, as the
    reference's ``bn_update(train_loader, …)`` does) for recomputing BatchNorm statistics, each batch split over
    the data-parallel ranks as training splits it: with the training loader's crop and flip drawn from a stream
    of its own (a resumed run draws the same), or plain."""
    loader = loop.loader
    generator = torch.Generator().manual_seed(seed_for(loop.seed, "batchnorm", loop.epoch))
    return BatchLoader(loop.train_data, loop.batch_size, loop.device, shuffle=augmented,
                       crop_padding=loader.crop_padding if augmented else 0, flip=loader.flip and augmented,
                       generator=generator, shard=(loop.dist.rank, loop.dist.world), drop_last=loader.drop_last)


AVERAGING.register("none")(WeightAveraging)


@AVERAGING.register("swa")
class SWA(WeightAveraging):
    """Equal-weight average of the end-of-epoch weights from the start epoch, BatchNorm statistics recomputed
    after each update on the training split: augmented as training draws it (``bn_data: augmented``, what the
    reference's ``bn_update(train_loader, …)`` sees) or plain (``clean``). The inputs are natural images either
    way, not adversarial ones."""

    name = "swa"

    def __init__(self, epochs: int, milestones: list[float], start: float | None = None, period: int = 1,
                 bn_data: str = "augmented") -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        if bn_data not in BN_DATA:
            raise ValueError(f"bn_data must be one of {', '.join(BN_DATA)}, got {bn_data!r}")
        self.bn_data = bn_data
        if start is not None and start <= 0:
            raise ValueError(f"start must be > 0 (a fraction of the run or an epoch), got {start}")
        super().__init__(epochs, milestones, start)
        self.period = period

    def _ensure(self, model: nn.Module) -> AveragedModel:
        if self.averaged is None:
            self.averaged = AveragedModel(model)
        return self.averaged

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        epoch = loop.epoch
        if epoch >= self.first_epoch and (epoch - self.first_epoch) % self.period == 0:
            averaged = self._ensure(loop.model)
            averaged.update_parameters(loop.model)
            update_bn(batchnorm_batches(loop, self.bn_data == "augmented"), averaged, device=loop.device)
            loop.dist.average_buffers(averaged.module)  # (the ranks' statistics of their shards: see average_buffers)
            self.after_update(loop.model)
        super().on_epoch_end(loop, row)

    def after_update(self, model: nn.Module) -> None:
        """Called after each update of the average."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "first_epoch": self.first_epoch, "period": self.period,
                "bn_data": self.bn_data}


@AVERAGING.register("iswa")
class ISWA(SWA):
    """SWA whose average is copied back into the model, so the next epoch's SGD starts from it."""

    name = "iswa"

    def after_update(self, model: nn.Module) -> None:
        with torch.no_grad():
            for target, source in zip(model.state_dict().values(), self.averaged.module.state_dict().values()):
                target.copy_(source)


@AVERAGING.register("ema")
class EMA(WeightAveraging):
    """Exponential moving average of the weights (and of the BatchNorm buffers, unless ``copy_buffers``), updated
    after every step: avg ← decay·avg + (1 − decay)·w, the first update a copy.

    ``warmup`` (a fraction of the run, or epochs when >= 1): the average copies the weights for that many of its
    first steps; ``ramp``: from then on the decay is min(decay, (1 + t)/(10 + t)), t the steps since the warm-up;
    ``copy_buffers``: BatchNorm statistics are the trained model's, copied at the end of every epoch, not averaged.
    Together these are Gowal et al.'s weight averaging as Wang et al.'s ``ema_update``/``update_bn`` run it."""

    name = "ema"

    def __init__(self, epochs: int, milestones: list[float], decay: float = 0.999, start: float | None = 0.0,
                 warmup: float = 0.0, ramp: bool = False, copy_buffers: bool = False) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 (a fraction of the run, or epochs), got {warmup}")
        super().__init__(epochs, milestones, start)
        if not start:
            self.first_epoch = 1
        self.decay, self.warmup, self.ramp, self.copy_buffers = decay, warmup, ramp, copy_buffers
        self.warmup_epochs = warmup * epochs if warmup < 1 else warmup
        self._epoch_buffers: list[torch.Tensor] | None = None  # an unfinished epoch's averaged buffers, to restore

    def _ensure(self, model: nn.Module) -> AveragedModel:
        if self.averaged is None:
            self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay),
                                          use_buffers=not self.copy_buffers)
        return self.averaged

    def decay_at(self, step: int, batches: int) -> float:
        """The decay of the average's ``step``-th update (1-based), with ``batches`` steps per epoch."""
        warmup_steps = self.warmup_epochs * batches
        if step < warmup_steps:
            return 0.0
        if self.ramp:
            since = step - warmup_steps
            return min(self.decay, (1 + since) / (10 + since))
        return self.decay

    def on_fit_start(self, loop: Any) -> None:
        super().on_fit_start(loop)
        if self._epoch_buffers is not None and self.averaged is not None:
            with torch.no_grad():
                for mine, saved in zip(self.averaged.module.buffers(), self._epoch_buffers):
                    mine.copy_(saved)
        self._epoch_buffers = None

    def epoch_state_dict(self) -> dict[str, Any] | None:
        """The averaged BatchNorm statistics: like the model's, each rank's own until the epoch's end."""
        if self.averaged is None or self.copy_buffers:
            return None
        return {"buffers": [b.detach().cpu() for b in self.averaged.module.buffers()]}

    def load_epoch_state_dict(self, state: dict[str, Any]) -> None:
        self._epoch_buffers = state["buffers"]

    def on_step_end(self, loop: Any, out: Any) -> None:
        if loop.epoch + 1 < self.first_epoch:  # loop.epoch counts completed epochs
            return
        if self.averaged is None:
            self._ensure(loop.model).update_parameters(loop.model)  # the first update copies the weights
            return
        step = (loop.epoch + 1 - self.first_epoch) * loop.batches + loop.position  # (position: steps of this epoch)
        average = get_ema_multi_avg_fn(self.decay_at(step, loop.batches))
        # AveragedModel.update_parameters reads its counter on the host, a wait for the device at every step;
        # this is the same EMA step through swa_utils' own averaging function, without that read
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        averaged = self.averaged.module
        mine, theirs = averaged.parameters(), loop.model.parameters()
        if not self.copy_buffers:
            mine, theirs = itertools.chain(mine, averaged.buffers()), itertools.chain(theirs, loop.model.buffers())
        for a, b in zip(mine, theirs):
            group = groups.setdefault((a.device, a.dtype), ([], []))
            group[0].append(a.detach())
            group[1].append(b.detach())
        for ema, current in groups.values():
            average(ema, current, self.averaged.n_averaged)
        self.averaged.n_averaged += 1

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if self.copy_buffers and self.averaged is not None:
            with torch.no_grad():
                for a, b in zip(self.averaged.module.buffers(), loop.model.buffers()):
                    a.copy_(b)
        elif self.averaged is not None:  # averaged from each rank's own buffers: the mean over ranks, as the model's
            loop.dist.average_buffers(self.averaged.module)
        super().on_epoch_end(loop, row)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "decay": self.decay, "start": self.start, "first_epoch": self.first_epoch,
                "warmup": self.warmup, "ramp": self.ramp, "copy_buffers": self.copy_buffers}
