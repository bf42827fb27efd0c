"""Warning of robust overfitting without a validation split: signals logged every epoch, rules that read them.

Signals (``TrainingSignals``, logged in every run's metrics.jsonl; their cost is what one training epoch
already computes — a forward hook on the head and one multiply-add per batch):

- ``small_loss_share``: the share of the epoch's training examples whose training loss — the objective's own
  per-example loss, at the weights the step updates — is below 0.5 (``loss_hist[0]``). Robust overfitting is
  the network fitting its training adversarial examples; this share measures how many it has fitted. For
  PGD-AT without a weight perturbation it is the first Loss Stationary Condition group of Yu et al. 2022
  (adversarial cross-entropy at w); for TRADES or MART it bins their losses, and under AWP or RWP the loss at
  w + v — what the step fits, not the LSC of the paper (``atlens analyze --what lsc`` computes that one).
- ``train_cas``: CAS (Wei et al. 2025) of the training adversarial examples the step trained on, grouped by
  their labels: the class-wise attribution matrix of the inputs the model actually saw, needing no
  held-out data.

Rules (small objects with ``observe(row) -> (candidate, overfitting)``) turn signals into a selected epoch;
``EarlyStop`` keeps that epoch's checkpoint (``checkpoints/selected.pt``), records it in ``summary.json`` and,
if asked, ends training once the rule declares overfitting. ``replay`` runs a rule over a finished run's
metrics, so every rule can be compared on the same runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from atlens.analysis.attribution import AttributionAccumulator, cas_score
from atlens.attacks.pgd import mode
from atlens.config import EarlyStopConfig, as_component
from atlens.data import BatchLoader, ImageTensors
from atlens.evaluation.accuracy import evaluate
from atlens.hooks import Callback
from atlens.registry import Registry
from atlens.runs import RunDirectory, save_checkpoint

SMALL_LOSS = 0.5  # the upper edge of the first LSC group

# Rules by name (``early_stop.rule``). A builder may take the early_stop section's shared settings
# (small_loss_limit, cas_window, cas_drop, patience) besides options of its own.
RULES: Registry = Registry("early-stop rule", skip=("small_loss_limit", "cas_window", "cas_drop", "patience"))


class TrainingSignals(Callback):
    """``small_loss_share`` and ``train_cas`` of each epoch, from the training steps' own adversarial examples (their
    features and the head weights they were computed with travel in the step's output)."""

    key = "training_signals"
    phase = "statistics"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._counts: torch.Tensor | None = None  # small losses, all losses: on the device, no per-step sync
        self._attributions: AttributionAccumulator | None = None
        self._saved: dict[str, Any] | None = None  # an unfinished epoch's, until the run starts

    def on_step_end(self, loop: Any, out: Any) -> None:
        losses = out.per_example.detach()
        small = (losses < SMALL_LOSS).sum()
        counts = torch.stack([small, small.new_full((), len(losses))])  # filled on the device, not copied from the host
        self._counts = counts if self._counts is None else self._counts + counts
        if out.features is not None:
            if self._attributions is None:
                self._attributions = AttributionAccumulator(loop.model, self.num_classes)
            self._attributions.update(out.features, out.target, out.head_weight)

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        counts = torch.zeros(2, dtype=torch.float64, device=loop.device) if self._counts is None else self._counts
        small, total = loop.dist.sum(counts.double()).tolist()
        row["small_loss_share"] = round(small / max(total, 1), 5)
        row["train_cas"] = None
        if self._attributions is not None:
            self._attributions.reduce(loop.dist.sum)
            if bool((self._attributions.counts > 0).all()):
                row["train_cas"] = cas_score(self._attributions.matrix())
        self._counts = None
        self._attributions = None

    def epoch_state_dict(self) -> dict[str, Any] | None:
        if self._counts is None:
            return None
        return {"counts": self._counts.cpu(),
                "attributions": None if self._attributions is None else self._attributions.state()}

    def load_epoch_state_dict(self, state: dict[str, Any]) -> None:
        self._saved = state

    def on_fit_start(self, loop: Any) -> None:
        saved, self._saved = self._saved, None
        if saved is not None:
            self._counts = saved["counts"].to(loop.device)
            if saved["attributions"] is not None:
                self._attributions = AttributionAccumulator(loop.model, self.num_classes).load(saved["attributions"])


class UnlabelledSignals(Callback):
    """``unlabelled_stability`` and ``unlabelled_cas`` at every evaluated epoch, on inputs no label was spent on
    (``data.unlabelled``: the training split outside the training subset, labels dropped).

    Each input is attacked (the evaluation's attack) against the model's own clean prediction. Stability is
    the share whose prediction the attack cannot change — robust accuracy with the prediction in place of the
    label — and ``unlabelled_cas`` is CAS of the attacked inputs grouped by predicted class (None while some
    class is never predicted). Cost: one clean forward and one evaluation attack per unlabelled input per
    evaluation, i.e. ``len(images) / len(test)`` of the test evaluation's cost."""

    phase = "signals"

    key = "unlabelled_signals"

    def __init__(self, images: torch.Tensor, attack: Any, num_classes: int, batch_size: int = 256,
                 seed: int = 0) -> None:
        self.images, self.attack, self.num_classes = images, attack, num_classes
        self.batch_size, self.seed = batch_size, seed

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        row["unlabelled_stability"] = row["unlabelled_cas"] = None
        if not consulted(row):
            return
        model, device = loop.evaluated, loop.device
        shard = loop.dist.shard(ImageTensors(self.images, torch.zeros(len(self.images), dtype=torch.long)))
        with torch.no_grad(), mode(model, False):
            predicted = torch.cat([model(x).argmax(1).cpu() for x, _ in BatchLoader(shard, self.batch_size, device)])
        attributions = AttributionAccumulator(model, self.num_classes)
        acc = evaluate(model, ImageTensors(shard.images, predicted), self.attack, self.batch_size, device,
                       seed=self.seed, observers=[attributions], clean=False,
                       crafting=loop.precision.evaluation_crafting)
        kept, total = loop.dist.sum(torch.tensor([acc.robust * acc.examples, acc.examples], dtype=torch.float64,
                                                 device=device)).tolist()
        row["unlabelled_stability"] = kept / total
        attributions.reduce(loop.dist.sum)
        if bool((attributions.counts > 0).all()):
            row["unlabelled_cas"] = cas_score(attributions.matrix())


# ------------------------------------------------------------------------------------------------ rules

class Rule:
    """Reads one metric of every epoch's row; ``observe`` says whether this epoch's checkpoint becomes the
    selection (only ``selectable`` epochs, those with an evaluation, can) and whether robust overfitting has
    begun."""

    name = "rule"
    signal = ""

    def observe(self, row: dict[str, Any], selectable: bool = True) -> tuple[bool, bool]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "signal": self.signal}

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


@RULES.register("none")
def no_rule() -> None:
    """No selection: the signals are logged all the same."""
    return None


class SmallLossRule(Rule):
    """Selects the last consulted epoch before the share of small training losses reaches ``share``;
    overfitting is declared from then on."""

    name, signal = "small_loss", "small_loss_share"

    def __init__(self, share: float) -> None:
        self.share, self.crossed = share, False

    def observe(self, row: dict[str, Any], selectable: bool = True) -> tuple[bool, bool]:
        value = row.get(self.signal)
        if value is not None:
            self.crossed = self.crossed or value >= self.share
        return selectable and value is not None and not self.crossed, self.crossed

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "share": self.share, "loss_below": SMALL_LOSS}


class CASTrendRule(Rule):
    """Selects the epoch where the moving average (over ``window`` epochs) of the training-example CAS peaks;
    overfitting is declared after ``patience`` consecutive consulted epochs more than ``drop`` (a fraction)
    below that peak — the CAS paper's account: a model that overfits discards cross-class features."""

    name, signal = "cas_trend", "train_cas"

    def __init__(self, window: int, drop: float, patience: int, signal: str = "train_cas") -> None:
        self.window, self.drop, self.patience, self.signal = window, drop, patience, signal
        self.values: list[float] = []
        self.peak, self.selectable_peak, self.below = -math.inf, -math.inf, 0

    def observe(self, row: dict[str, Any], selectable: bool = True) -> tuple[bool, bool]:
        value = row.get(self.signal)
        if value is None:
            return False, self.below >= self.patience
        self.values = (self.values + [value])[-self.window:]
        smoothed = sum(self.values) / len(self.values)
        self.peak = max(self.peak, smoothed)
        self.below = self.below + 1 if smoothed < (1 - self.drop) * self.peak else 0
        candidate = selectable and smoothed >= self.selectable_peak
        if candidate:
            self.selectable_peak = smoothed
        return candidate, self.below >= self.patience

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "window": self.window, "drop": self.drop, "patience": self.patience}


class BestSoFarRule(Rule):
    """Selects the best value of ``signal`` so far; overfitting after ``patience`` evaluations without
    improvement."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.stale = patience, -math.inf, 0

    def observe(self, row: dict[str, Any], selectable: bool = True) -> tuple[bool, bool]:
        value = row.get(self.signal)
        if value is None or not selectable:
            return False, self.stale >= self.patience
        if value > self.best:
            self.best, self.stale = value, 0
            return True, False
        self.stale += 1
        return False, self.stale >= self.patience

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "patience": self.patience}


class ValidationRule(BestSoFarRule):
    """The baseline: the best validation robust accuracy so far (it costs a validation split)."""

    name, signal = "val", "val_robust_acc"


class StabilityRule(BestSoFarRule):
    """The same selection on unlabelled inputs (``UnlabelledSignals``): the share of them whose predicted class
    the evaluation attack cannot change. No label is spent; the inputs must be extra data."""

    name, signal = "unlabelled", "unlabelled_stability"


RULES.register("small_loss")(lambda small_loss_limit: SmallLossRule(small_loss_limit))
RULES.register("cas_trend")(lambda cas_window, cas_drop, patience: CASTrendRule(cas_window, cas_drop, patience))
RULES.register("val")(lambda patience: ValidationRule(patience))
RULES.register("unlabelled")(lambda patience: StabilityRule(patience))


def make_rule(cfg: EarlyStopConfig, rule: str | None = None) -> Rule | None:
    """The rule ``cfg.rule`` (or the one named ``rule``) with ``cfg``'s shared settings; None for ``none``."""
    section = as_component(rule or cfg.rule, "early_stop.rule")
    shared = {key: getattr(cfg, key) for key in ("small_loss_limit", "cas_window", "cas_drop", "patience")}
    return RULES.build_from(section, "early_stop.rule", **shared)


def consulted(row: dict[str, Any]) -> bool:
    """Rules select among the epochs whose checkpoints were evaluated (so every rule's choice has a measured
    test accuracy to compare); they read their signal at every epoch."""
    return row.get("test_robust_acc") is not None or row.get("val_robust_acc") is not None


def replay(rule: Rule, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What ``rule`` selects over a run's metrics rows: the selected epoch and where it declares overfitting."""
    selected = declared = None
    for row in rows:
        candidate, overfitting = rule.observe(row, consulted(row))
        if candidate:
            selected = row["epoch"]
        if overfitting and declared is None:
            declared = row["epoch"]
    return {"rule": rule.describe(), "selected_epoch": selected, "overfitting_declared_at": declared}


class EarlyStop(Callback):
    """Keeps the checkpoint the rule selects as ``checkpoints/selected.pt``; with ``stop``, ends training when
    the rule declares robust overfitting. Runs after the evaluation and the signals, before the writers."""

    phase = "decision"

    key = "early_stop"

    def __init__(self, rule: Rule, stop: bool, run: RunDirectory) -> None:
        self.rule, self.stop, self.run = rule, stop, run
        self.selected: int | None = None
        self.declared: int | None = None

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        candidate, overfitting = self.rule.observe(row, consulted(row))
        if candidate:
            self.selected = loop.epoch
            if loop.dist.is_main:
                save_checkpoint({**loop.state_dict(), "selected_by": self.rule.describe()},
                                self.run.checkpoints / "selected.pt")
        if overfitting and self.declared is None:
            self.declared = loop.epoch
        if overfitting and self.stop:
            loop.should_stop = True
        row["early_stop_selected"] = self.selected

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        summary["early_stop"] = {"rule": self.rule.describe(), "selected_epoch": self.selected,
                                 "overfitting_declared_at": self.declared,
                                 "stopped_at": loop.epoch if loop.should_stop else None}

    def state_dict(self) -> dict[str, Any]:
        return {"rule": self.rule.state_dict(), "selected": self.selected, "declared": self.declared}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rule.load_state_dict(state["rule"])
        self.selected, self.declared = state["selected"], state["declared"]
