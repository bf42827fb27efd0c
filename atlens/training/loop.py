"""The training loop: it knows steps and epochs, and nothing about which methods it runs.

A step crafts the training inputs (the objective), perturbs the weights around the loss (the weight perturbation)
and takes one optimiser step on the objective's loss through the criterion; the rest happens in callbacks
(``atlens.hooks`` lists the state they read). Every random draw comes from streams derived from the seed and the
epoch, so a resumed run needs only its epoch to continue the interrupted one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from atlens.errors import NonFiniteLossError
from atlens.hooks import Callback, in_phase_order, state_keys
from atlens.runs import load_weights
from atlens.seeding import GLOBAL_NOISE, Noise, seed_for, seeded
from atlens.training.build import Components
from atlens.training.distributed import Distributed
from atlens.training.objectives import StepOutput


class Loop:
    def __init__(self, parts: Components, callbacks: Sequence[Callback] | None = None, dist: Distributed | None = None,
                 checkpoint_hint: str | None = None) -> None:
        """``callbacks`` default to the ones ``build`` assembled (``parts.callbacks``); run in phase order."""
        callbacks = parts.callbacks if callbacks is None else callbacks
        self.parts, self.callbacks, self.dist = parts, in_phase_order(callbacks), dist or Distributed()
        self.model, self.device = parts.model, parts.device
        self.epochs, self.seed, self.batch_size = parts.cfg.optim.epochs, parts.cfg.seed, parts.cfg.data.batch_size
        self.loader, self.train_data, self.precision, self.batches = (parts.loader, parts.data.train, parts.precision,
                                                                      len(parts.loader))
        self.train_model = self.dist.wrap(parts.model)  # the loss runs through DDP, which averages gradients
        self.evaluated: nn.Module = parts.model  # what is evaluated and checkpointed (an average once one exists)
        self.epoch, self.should_stop = 0, False  # epochs completed; a callback ends training early by setting it
        self.lr = parts.schedule(0.0)
        self.epoch_started, self.checkpoint_hint = time.perf_counter(), checkpoint_hint  # (for error messages)
        self._not_finite: torch.Tensor | None = None  # per step of the epoch, on the device
        self._keys = state_keys(self.callbacks)  # checkpoint keys, unique per instance

    def fit(self) -> dict[str, Any]:
        """Train to the end (or a callback's ``should_stop``); every callback hears of an exception."""
        try:
            return self._fit()
        except BaseException as error:
            for cb in self.callbacks:
                cb.on_exception(self, error)
            raise

    def _fit(self) -> dict[str, Any]:
        for cb in self.callbacks:
            cb.on_fit_start(self)
        seed, rank, world = self.seed, self.dist.rank, self.dist.world
        starts = torch.Generator(self.device)  # attack starts, drawn for the global batch (seeding.Noise)
        while self.epoch < self.epochs and not self.should_stop:
            epoch = self.epoch
            self.epoch_started = time.perf_counter()
            self.loader.seed(seed_for(seed, "loader", epoch))  # the same order and augmentation on every rank
            starts.manual_seed(seed_for(seed, "starts", epoch))
            self.model.train()
            for i, (x, y) in enumerate(self.loader):
                noise = Noise(starts, rank, world, self.loader.global_size(i))
                with seeded(seed_for(seed, "train", rank, epoch, i), self.device):  # dropout and the like
                    out = self.step(x, y, epoch + i / self.batches, i, noise)
                for cb in self.callbacks:  # outside the step's stream: a callback's draws shift nothing
                    cb.on_step_end(self, out)
            self._raise_if_not_finite()
            self.dist.average_buffers(self.model)  # the same BatchNorm statistics on every rank from here on
            self.epoch = epoch + 1
            # the precision each phase ran in this epoch (a run resumed on another machine may differ)
            row: dict[str, Any] = {"epoch": self.epoch, "lr": self.lr, "precision": self.parts.precision.describe()}
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
        summary: dict[str, Any] = {"precision": self.parts.precision.describe()}
        for cb in self.callbacks:
            cb.on_fit_end(self, summary)
        return summary

    def step(self, x: torch.Tensor, y: torch.Tensor, progress: float, batch: int = 0,
             noise: Noise = GLOBAL_NOISE) -> StepOutput:
        p = self.parts
        self.lr = p.schedule(progress)
        for group in p.optimizer.param_groups:
            group["lr"] = self.lr
        if p.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with p.precision.crafting():
            training_batch = p.objective.craft(self.model, x, y, noise)

        def ascent_loss(model: nn.Module) -> torch.Tensor:
            with p.precision.crafting():
                return p.objective.per_example_loss(model, training_batch)

        # a no-op without a weight perturbation; the ascent follows the global batch's gradient
        with p.perturbation.applied(self.model, ascent_loss, self.epoch, self.dist.sum):
            with p.precision.training():
                out = p.objective.loss(self.train_model, training_batch, p.criterion)
            self._note_finite(out.loss, batch)
            p.optimizer.zero_grad(set_to_none=True)
            p.scaler.scale(out.loss * self.dist.share(len(x), noise.batch)).backward()
            p.scaler.step(p.optimizer)  # fp16: skipped when the scaled gradients overflowed
            p.scaler.update()
        return out

    def _note_finite(self, loss: torch.Tensor, batch: int) -> None:
        """Remember on the device which steps had a non-finite loss (no per-step wait for the device)."""
        flags = self._not_finite
        if flags is None or batch >= len(flags):  # (a step outside fit may pass any index)
            self._not_finite = torch.zeros(max(self.batches, batch + 1), dtype=torch.bool, device=loss.device)
            if flags is not None:
                self._not_finite[: len(flags)] = flags
        self._not_finite[batch] |= ~torch.isfinite(loss.detach())

    def _raise_if_not_finite(self) -> None:
        flags, self._not_finite = self._not_finite, None
        if flags is None or not bool(flags.any()):
            return
        batch = int(flags.nonzero()[0])
        where = (f"the last good checkpoint is {self.checkpoint_hint}" if self.checkpoint_hint and self.epoch
                 else "no checkpoint has been written yet")
        raise NonFiniteLossError(f"training loss became non-finite at epoch {self.epoch + 1}, batch {batch + 1} "
                                 f"(lr {self.lr:g}); lower optim.lr or check the data; {where}")

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: no RNG state, since every stream is derived from the epoch."""
        state = {"epoch": self.epoch, "model_spec": self.parts.model_spec, "model": self.evaluated.state_dict(),
                 "optimizer": self.parts.optimizer.state_dict(), "scaler": self.parts.scaler.state_dict(),
                 "callbacks": {key: cb.state_dict() for key, cb in zip(self._keys, self.callbacks)}}
        if self.evaluated is not self.model:  # "model" is what load_model returns; SGD resumes from these
            state["training_model"] = self.model.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], source: str) -> list[str]:
        """Restore a checkpoint; returns a warning for every callback state it cannot place."""
        load_weights(self.model, state.get("training_model", state["model"]), source)
        self.parts.optimizer.load_state_dict(state["optimizer"])
        self.parts.scaler.load_state_dict(state["scaler"])
        saved_states, warnings = dict(state["callbacks"]), []
        for key, cb in zip(self._keys, self.callbacks):
            if (saved := saved_states.pop(key, None)) is not None:
                cb.load_state_dict(saved)
            elif cb.state_dict() is not None:
                warnings.append(f"callback {key!r} finds no saved state in {source} and starts afresh")
        warnings += [f"{source} holds state for a callback {key!r} that this run does not have; it is ignored"
                     for key, value in saved_states.items() if value is not None]
        self.epoch = state["epoch"]
        return warnings
