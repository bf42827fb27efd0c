"""The training loop: it knows steps and epochs, and nothing about which methods it runs.

A step crafts the training inputs (the objective), perturbs the weights around the loss (the weight perturbation)
and takes one optimiser step on the objective's loss through the criterion; the rest happens in callbacks
(``atlens.hooks`` lists the state they read). Every random draw comes from streams derived from the seed and the
epoch, so a run resumed at an epoch boundary needs only its epoch; one stopped inside an epoch by a signal
(``atlens.training.stopping``) also keeps its position, the attack starts' stream and each rank's epoch state."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from atlens.errors import TrainingInterrupted
from atlens.hooks import Callback, in_phase_order, load_states, state_keys
from atlens.runs import load_weights
from atlens.seeding import GLOBAL_NOISE, Noise, seed_for, seeded
from atlens.training.build import Components
from atlens.training.distributed import Distributed
from atlens.training.monitors import NonFiniteSteps
from atlens.training.objectives import StepOutput
from atlens.training.stopping import StopSignals, epoch_state, load_epoch_state


class Loop:
    def __init__(self, parts: Components, callbacks: Sequence[Callback] | None = None, dist: Distributed | None = None,
                 checkpoint_hint: str | None = None, stop: StopSignals | None = None) -> None:
        """``callbacks`` default to the ones ``build`` assembled (``parts.callbacks``); run in phase order.
        ``stop``: the signals that end training at the next step boundary (installed by whoever enters it)."""
        callbacks = parts.callbacks if callbacks is None else callbacks
        self.parts, self.callbacks, self.dist = parts, in_phase_order(callbacks), dist or Distributed()
        self.model, self.device = parts.model, parts.device
        self.epochs, self.seed, self.batch_size = parts.cfg.optim.epochs, parts.cfg.seed, parts.cfg.data.batch_size
        self.loader, self.train_data, self.precision, self.batches = (parts.loader, parts.data.train, parts.precision,
                                                                      len(parts.loader))
        self.train_model = self.dist.wrap(parts.model)  # the loss runs through DDP, which averages gradients
        self.evaluated: nn.Module = parts.model  # what is evaluated and checkpointed (an average once one exists)
        self.epoch, self.should_stop = 0, False  # epochs completed; a callback ends training early by setting it
        self.position, self.stop = 0, stop or StopSignals([])  # steps completed in the current epoch
        self.rank_states: list[Any] | None = None  # every rank's epoch state, gathered when a signal stops training
        self._resumed: dict[str, Any] = {}  # where a run stopped inside an epoch continues
        self.starts = torch.Generator(self.device)  # attack starts, drawn for the global batch (seeding.Noise)
        self.lr = parts.schedule(0.0)
        self.epoch_started, self.checkpoint_hint = time.perf_counter(), checkpoint_hint  # (for error messages)
        self._not_finite = NonFiniteSteps()
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
        seed, rank, world, starts = self.seed, self.dist.rank, self.dist.world, self.starts
        while self.epoch < self.epochs and not self.should_stop:
            epoch, resumed, self._resumed = self.epoch, self._resumed, {}
            self.epoch_started = time.perf_counter() - resumed.get("seconds", 0.0)
            self.loader.seed(seed_for(seed, "loader", epoch))  # the same order and augmentation on every rank
            starts.manual_seed(seed_for(seed, "starts", epoch))
            if "starts" in resumed:
                starts.set_state(resumed["starts"])
            self.model.train()
            for i, (x, y) in enumerate(self.loader):
                if i < self.position:  # replayed up to where a stopped run was: the draws are the same
                    continue
                noise = Noise(starts, rank, world, self.loader.global_size(i))
                with seeded(seed_for(seed, "train", rank, epoch, i), self.device):  # dropout and the like
                    out = self.step(x, y, epoch + i / self.batches, i, noise)
                self.position = i + 1
                for cb in self.callbacks:  # outside the step's stream: a callback's draws shift nothing
                    cb.on_step_end(self, out)
                if stopped := self.stop.agreed(self.dist):
                    self._stop_here(stopped)
            self._raise_if_not_finite()
            self.dist.average_buffers(self.model)  # the same BatchNorm statistics on every rank from here on
            self.epoch, self.position = epoch + 1, 0
            # the precision each phase ran in this epoch (a run resumed on another machine may differ)
            row: dict[str, Any] = {"epoch": self.epoch, "lr": self.lr, "precision": self.parts.precision.describe()}
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
            if (stopped := self.stop.agreed(self.dist)) and self.epoch < self.epochs:
                self._stop_here(stopped)  # at an epoch boundary: last.pt is the checkpoint
        summary: dict[str, Any] = {"precision": self.parts.precision.describe()}
        for cb in self.callbacks:
            cb.on_fit_end(self, summary)
        return summary

    def _stop_here(self, signal_name: str) -> None:
        """Stop after this step on every rank (they agreed on it): a run that diverged fails as at the epoch's end;
        otherwise every rank's epoch state goes to rank 0 and the writers save a checkpoint (``on_stop``)."""
        if self.position:
            self._raise_if_not_finite()
            self.rank_states = self.dist.gather_objects(epoch_state(self.model, zip(self._keys, self.callbacks)))
            for cb in self.callbacks:
                cb.on_stop(self)
            # no rank leaves before rank 0 has written the checkpoint: one that trained on in this process (a
            # resume) would otherwise find the folder without it and start elsewhere than rank 0 does
            self.dist.barrier()
        raise TrainingInterrupted(signal_name, self.epoch, self.position, self.batches, self.stop)

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
            self._not_finite.note(out.loss, batch, self.batches)
            p.optimizer.zero_grad(set_to_none=True)
            p.scaler.scale(out.loss * self.dist.share(len(x), noise.batch)).backward()
            p.scaler.step(p.optimizer)  # fp16: skipped when the scaled gradients overflowed
            p.scaler.update()
        return out

    def _raise_if_not_finite(self) -> None:
        where = self.checkpoint_hint if self.epoch else None
        self._not_finite.raise_if_any(self.epoch, self.lr, where, self.dist.sum if self.dist.enabled else None)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: no RNG state, since every stream is derived from the epoch; inside an
        epoch also the position, the attack starts' stream and every rank's epoch state (``rank_states``)."""
        state = {"epoch": self.epoch, "model_spec": self.parts.model_spec, "model": self.evaluated.state_dict(),
                 "optimizer": self.parts.optimizer.state_dict(), "scaler": self.parts.scaler.state_dict(),
                 "callbacks": {key: cb.state_dict() for key, cb in zip(self._keys, self.callbacks)}}
        if self.evaluated is not self.model:  # "model" is what load_model returns; SGD resumes from these
            state["training_model"] = self.model.state_dict()
        if self.position:
            state["within_epoch"] = {"position": self.position, "starts": self.starts.get_state(),
                                     "seconds": time.perf_counter() - self.epoch_started, "ranks": self.rank_states}
        return state

    def load_state_dict(self, state: dict[str, Any], source: str) -> list[str]:
        """Restore a checkpoint; returns a warning for every callback state it cannot place."""
        load_weights(self.model, state.get("training_model", state["model"]), source)
        self.parts.optimizer.load_state_dict(state["optimizer"])
        self.parts.scaler.load_state_dict(state["scaler"])
        warnings = load_states(self.callbacks, self._keys, state["callbacks"], source)
        self.epoch = state["epoch"]
        if "within_epoch" in state:  # this rank's share of the unfinished epoch, and where it stopped
            within = state["within_epoch"]
            load_epoch_state(within["ranks"], self.dist, self.model, zip(self._keys, self.callbacks),
                             f"{source} (stopped inside epoch {self.epoch + 1})")
            self.position, self._resumed = within["position"], {"starts": within["starts"],
                                                                "seconds": within["seconds"]}
        return warnings
