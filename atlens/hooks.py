"""The hooks the training loop calls: the ``Callback`` protocol (after Lightning's ``Callback``).

The loop calls every hook of every callback in the order of their ``phase`` (``PHASES``; list order within a
phase) and never knows what a callback does. A callback reads what it needs from the loop's public state
(``model``, ``evaluated``, ``device``, ``dist``, ``epoch``, ``epochs``, ``lr``, ``batches``, ``loader``,
``train_data``, ``batch_size``, ``seed``, ``precision``) or takes it in its constructor; it talks back only
through ``loop.evaluated``, ``loop.should_stop`` and the epoch's metrics ``row``. Each saves its own state,
stored in checkpoints under a key the loop makes unique (``key``, numbered when a class is used twice), and what it
gathered in an unfinished epoch through ``epoch_state_dict`` (a run stopped by a signal resumes mid-epoch).
Evaluation, CAS tracking, weight averaging, statistics, metrics files, checkpoints, figures and loggers are
callbacks.

This module imports nothing of atlens, so components anywhere (weight space, analysis, training) can be
callbacks without depending on the loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# When in an epoch's end a callback runs, by what its row entries depend on: state the loss reads, statistics
# of the epoch's steps, weight averaging (which decides the evaluated model), evaluation, signals read at
# evaluated epochs, decisions taken from the row, a user's callbacks, then the writers — metrics before
# checkpoints (a crash between them is undone by truncating the metrics on resume) — and what only shows.
PHASES = ("state", "statistics", "averaging", "evaluation", "signals", "decision", "user", "metrics",
          "checkpoint", "display")


def in_phase_order(callbacks: Iterable[Callback]) -> list[Callback]:
    """``callbacks`` sorted by phase, keeping their given order within a phase."""
    callbacks = list(callbacks)
    unknown = sorted({cb.phase for cb in callbacks} - set(PHASES))
    if unknown:
        raise ValueError(f"unknown callback phase(s) {', '.join(unknown)}; phases: {', '.join(PHASES)}")
    return sorted(callbacks, key=lambda cb: PHASES.index(cb.phase))


def state_keys(callbacks: Iterable[Callback]) -> list[str]:
    """Each callback's key in a checkpoint: its ``key``, with ``-2``, ``-3``, ... for later callbacks of the same
    key (the order is the run's phase order, the same in a resumed run)."""
    keys, seen = [], {}
    for cb in callbacks:
        seen[cb.key] = seen.get(cb.key, 0) + 1
        keys.append(cb.key if seen[cb.key] == 1 else f"{cb.key}-{seen[cb.key]}")
    return keys


def load_states(callbacks: Iterable[Callback], keys: list[str], saved: dict[str, Any], source: str) -> list[str]:
    """Give each callback its state saved under its key in ``source``; returns a warning for every state that
    cannot be placed (a callback without saved state starts afresh; a saved state without its callback is
    ignored)."""
    saved, warnings = dict(saved), []
    for key, cb in zip(keys, callbacks):
        if (state := saved.pop(key, None)) is not None:
            cb.load_state_dict(state)
        elif cb.state_dict() is not None:
            warnings.append(f"callback {key!r} finds no saved state in {source} and starts afresh")
    return warnings + [f"{source} holds state for a callback {key!r} that this run does not have; it is ignored"
                       for key, value in saved.items() if value is not None]


class Callback:
    """Every hook does nothing; override the ones you need. ``loop`` is an ``atlens.training.loop.Loop``."""

    phase = "user"  # one of PHASES

    @property
    def key(self) -> str:
        """Where this callback's state is stored in a checkpoint (the loop numbers repeats)."""
        return type(self).__name__

    def on_fit_start(self, loop: Any) -> None:
        """Before the first epoch of this process (fresh or resumed; state already loaded)."""

    def on_step_end(self, loop: Any, out: Any) -> None:
        """After every optimiser step; ``out`` is the objective's ``StepOutput``."""

    def on_evaluation_batch(self, loop: Any, split: str, features: Any, labels: Any) -> None:
        """For every batch of a per-epoch evaluation pass (``split``: val or test; this rank's shard): the
        penultimate features of the attacked inputs and their labels, from the evaluation's own forward pass."""

    def on_evaluation_end(self, loop: Any, split: str, row: dict[str, Any]) -> None:
        """After a per-epoch evaluation pass over ``split``, its accuracies already in ``row``."""

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        """After every epoch; may add entries to ``row`` (the epoch's line in metrics.jsonl)."""

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        """After the last epoch; may add entries to the run's summary."""

    def on_stop(self, loop: Any) -> None:
        """Training stops at a step boundary inside an epoch (a stop signal; ``loop.position`` steps of epoch
        ``loop.epoch + 1`` are done): called on every rank after the loop gathered the ranks' epoch states; a
        writer saves what a resume needs (``loop.state_dict()``). ``on_exception`` follows."""

    def on_exception(self, loop: Any, error: BaseException) -> None:
        """Training stopped with ``error`` (an interruption included): close what the callback opened."""

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (called before ``on_fit_start`` when resuming)."""

    def epoch_state_dict(self) -> dict[str, Any] | None:
        """What this callback gathered so far in the current epoch on this rank (sums over its steps, statistics of
        its shard), with tensors on the CPU. Saved for every rank when training stops inside an epoch and given
        back to the same rank on resume (``load_epoch_state_dict``), so the epoch ends as it would have."""
        return None

    def load_epoch_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``epoch_state_dict`` returned (after ``load_state_dict``, before ``on_fit_start``)."""


def listens_to_evaluation(callback: Callback) -> bool:
    """Whether ``callback`` overrides the evaluation-batch hook (an evaluation computes features only for them)."""
    return type(callback).on_evaluation_batch is not Callback.on_evaluation_batch
