"""The training loop: it knows steps and epochs, and nothing about which methods it runs.

A step crafts the training inputs (the objective), perturbs the weights around the loss (the weight
perturbation, ascending the objective's own per-example loss) and takes one optimiser step on the
objective's loss through the criterion. Everything else happens in callbacks (``atlens.callback``).
Every random draw of an epoch comes from streams derived from (seed, rank, epoch), so a resumed run
needs only its epoch to continue the interrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from atlens.callback import Callback
from atlens.data import BatchLoader
from atlens.errors import NonFiniteLossError
from atlens.runs import load_weights
from atlens.seeding import seed_for, seeded
from atlens.training.build import Components
from atlens.training.distributed import Distributed
from atlens.training.objectives import StepOutput


class Loop:
    def __init__(self, parts: Components, callbacks: Sequence[Callback], dist: Distributed | None = None,
                 checkpoint_hint: str | None = None) -> None:
        self.parts, self.callbacks, self.dist = parts, list(callbacks), dist or Distributed()
        self.cfg, self.model, self.device = parts.cfg, parts.model, parts.device
        self.train_model = self.dist.wrap(parts.model)  # the loss runs through DDP, which averages gradients
        self.evaluated: nn.Module = parts.model  # what is evaluated and checkpointed (an average once one exists)
        self.epoch = 0  # epochs completed
        self.lr = parts.schedule(0.0)
        self.should_stop = False
        self.epoch_started = time.perf_counter()
        self.checkpoint_hint = checkpoint_hint  # where a user finds the last good checkpoint, for error messages
        keys = [cb.key for cb in self.callbacks]
        if len(set(keys)) != len(keys):
            raise ValueError(f"callback keys must be unique, got {keys}")

    @property
    def batches(self) -> int:
        return len(self.parts.loader)

    def clean_batches(self) -> BatchLoader:
        """The training split in order, without augmentation (e.g. to recompute BatchNorm statistics)."""
        return BatchLoader(self.parts.data.train, self.cfg.data.batch_size, self.device)

    def fit(self) -> dict[str, Any]:
        for cb in self.callbacks:
            cb.on_fit_start(self)
        seed, rank = self.cfg.seed, self.dist.rank
        while self.epoch < self.cfg.optim.epochs and not self.should_stop:
            epoch = self.epoch
            self.epoch_started = time.perf_counter()
            self.parts.loader.generator.manual_seed(seed_for(seed, "loader", epoch))  # same order on every rank
            with seeded(seed_for(seed, "train", rank, epoch), self.device):  # attack starts, dropout
                self.model.train()
                for i, (x, y) in enumerate(self.parts.loader):
                    out = self.step(x, y, epoch + i / self.batches, i)
                    for cb in self.callbacks:
                        cb.on_step_end(self, out)
            self.epoch = epoch + 1
            # the precision each phase ran in this epoch (a run resumed on another machine may differ)
            row: dict[str, Any] = {"epoch": self.epoch, "lr": self.lr, "precision": self.parts.precision.describe()}
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
        summary: dict[str, Any] = {"precision": self.parts.precision.describe()}
        for cb in self.callbacks:
            cb.on_fit_end(self, summary)
        return summary

    def step(self, x: torch.Tensor, y: torch.Tensor, progress: float, batch: int = 0) -> StepOutput:
        p = self.parts
        self.lr = p.schedule(progress)
        for group in p.optimizer.param_groups:
            group["lr"] = self.lr
        if p.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with p.precision.crafting():
            training_batch = p.objective.craft(self.model, x, y)

        def ascent_loss(model: nn.Module) -> torch.Tensor:
            with p.precision.crafting():
                return p.objective.per_example_loss(model, training_batch)

        with p.perturbation.applied(self.model, ascent_loss, self.epoch):  # a no-op without a weight perturbation
            with p.precision.training():
                out = p.objective.loss(self.train_model, training_batch, p.criterion)
            if not torch.isfinite(out.loss):
                where = (f"the last good checkpoint is {self.checkpoint_hint}" if self.checkpoint_hint and self.epoch
                         else "no checkpoint has been written yet")
                raise NonFiniteLossError(
                    f"training loss became {out.loss.item()} at epoch {self.epoch + 1}, batch {batch + 1} "
                    f"(lr {self.lr:g}); lower optim.lr or check the data; {where}")
            p.optimizer.zero_grad(set_to_none=True)
            p.scaler.scale(out.loss).backward()
            p.scaler.step(p.optimizer)  # fp16: skipped when the scaled gradients overflowed
            p.scaler.update()
        return out

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: no RNG state, since every stream is derived from the epoch."""
        state = {"epoch": self.epoch, "model_spec": self.parts.model_spec, "model": self.evaluated.state_dict(),
                 "optimizer": self.parts.optimizer.state_dict(), "scaler": self.parts.scaler.state_dict(),
                 "callbacks": {cb.key: cb.state_dict() for cb in self.callbacks}}
        if self.evaluated is not self.model:  # "model" is what load_model returns; SGD resumes from these
            state["training_model"] = self.model.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        load_weights(self.model, state.get("training_model", state["model"]), source)
        self.parts.optimizer.load_state_dict(state["optimizer"])
        self.parts.scaler.load_state_dict(state["scaler"])
        for cb in self.callbacks:
            saved = state["callbacks"].get(cb.key)
            if saved is not None:
                cb.load_state_dict(saved)
        self.epoch = state["epoch"]
