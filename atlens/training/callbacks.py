"""The per-epoch work of a training run, as callbacks (protocol: ``atlens.hooks``), each doing one thing.

Each declares its ``phase``; ``atlens.training.build`` assembles them for a config and the loop runs them in
phase order. ``CALLBACKS`` holds the callbacks a config can name (``callbacks: [NAME or {name: NAME, ...}]``):
a builder takes its own options and any of ``run`` (the RunDirectory), ``config`` (the resolved config as a
mapping), ``classes``, ``epochs`` and ``seed``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from atlens.analysis import AttributionAccumulator, cas_score, compute_cas, write_cas, write_comparison
from atlens.analysis.lsc import LossHistogram
from atlens.attacks import fgsm
from atlens.data import ImageTensors
from atlens.evaluation import Accuracy, PGDAttack, evaluate
from atlens.hooks import Callback, listens_to_evaluation
from atlens.progress import count, duration
from atlens.registry import Registry
from atlens.runs import INTERRUPTED, RunDirectory, load_checkpoint, model_from_checkpoint, save_checkpoint
from atlens.training.monitors import catastrophic_overfitting
from atlens.training.summary import summarize

CALLBACKS: Registry = Registry("callback", skip=("run", "config", "classes", "epochs", "seed"))


@CALLBACKS.register("batchnorm_momentum")
class BatchNormMomentum(Callback):
    """Every BatchNorm layer's running-statistics momentum (PyTorch's convention: the weight of the new batch);
    ``first``: the momentum of the run's very first step (Wang et al.'s 1.0 sets the running statistics to the first
    batch's, as Haiku initialises them, and 0.01 afterwards)."""

    phase = "state"

    def __init__(self, momentum: float = 0.1, first: float | None = None) -> None:
        for name, value in (("momentum", momentum), ("first", first)):
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.momentum, self.first = momentum, first
        self._first_step = False

    def _set(self, loop: Any, momentum: float) -> None:
        for module in loop.model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum

    def on_fit_start(self, loop: Any) -> None:
        self._first_step = loop.epoch == 0 and loop.position == 0 and self.first is not None
        self._set(loop, self.first if self._first_step else self.momentum)

    def on_step_end(self, loop: Any, out: Any) -> None:
        if self._first_step:
            self._first_step = False
            self._set(loop, self.momentum)


class TrainingStats(Callback):
    """Mean training loss and accuracy on the training inputs (adversarial unless the objective trains
    on clean inputs), summed over data-parallel ranks."""

    phase = "statistics"

    def __init__(self) -> None:
        self.totals: torch.Tensor | None = None

    def on_step_end(self, loop: Any, out: Any) -> None:
        batch = torch.stack([out.loss.detach().double() * len(out.logits),
                             (out.logits.detach().argmax(1) == out.target).sum().double(),
                             out.loss.new_full((), float(len(out.logits)), dtype=torch.float64)])  # on the device
        self.totals = batch if self.totals is None else self.totals + batch

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        loss, correct, seen = loop.dist.sum(self.totals).tolist()
        row["train_loss"], row["train_robust_acc"] = loss / seen, correct / seen
        self.totals = None

    def epoch_state_dict(self) -> dict[str, Any] | None:
        return None if self.totals is None else {"totals": self.totals.cpu()}

    def load_epoch_state_dict(self, state: dict[str, Any]) -> None:
        self.totals = state["totals"]

    def on_fit_start(self, loop: Any) -> None:
        if self.totals is not None:
            self.totals = self.totals.to(loop.device)


class LossStatistics(Callback):
    """Where the training losses sit (Yu et al.'s LSC groups), and the share below the weight
    perturbation's loss threshold when it has one (RWP's c_min)."""

    phase = "statistics"

    def __init__(self, threshold: float | None) -> None:
        self.stats = LossHistogram(threshold)

    def on_step_end(self, loop: Any, out: Any) -> None:
        self.stats.update(out.per_example)

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        self.stats.reduce(loop.dist.sum)
        row.update(self.stats.epoch_row())

    def epoch_state_dict(self) -> dict[str, Any]:
        return {"counts": self.stats.counts.cpu()}

    def load_epoch_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.counts = state["counts"].clone()

    def on_fit_start(self, loop: Any) -> None:
        self.stats.counts = self.stats.counts.to(loop.device)


@dataclass(frozen=True)
class Schedule:
    """Epochs (1-based) at which periodic work is due: every ``every`` epochs and at the last one."""

    epochs: int
    every: tuple[int, ...]  # 0 entries never fire

    def due(self, epoch: int) -> bool:
        return any(e and (epoch % e == 0 or epoch == self.epochs) for e in self.every)


def reduced_accuracy(acc: Accuracy, loop: Any) -> tuple[float, float]:
    """Clean and robust accuracy over all ranks' shards."""
    counts = torch.tensor([acc.clean * acc.examples, acc.robust * acc.examples, acc.examples],
                          dtype=torch.float64, device=loop.device)
    clean, robust, total = loop.dist.sum(counts).tolist()
    return clean / total, robust / total


class _Forward:
    """The evaluation's feature observer: hands every batch to the callbacks' evaluation-batch hook."""

    def __init__(self, loop: Any, split: str, listeners: list[Callback]) -> None:
        self.loop, self.split, self.listeners = loop, split, listeners

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        for cb in self.listeners:
            cb.on_evaluation_batch(self.loop, self.split, features, labels)


class Evaluate(Callback):
    """Clean and PGD accuracy on the validation and test subsets at the epochs ``schedule`` names. Callbacks
    that need features of the same attacked inputs (CAS tracking) receive them through the evaluation hooks."""

    phase = "evaluation"

    def __init__(self, test: ImageTensors, val: ImageTensors | None, attack: PGDAttack, schedule: Schedule,
                 batch_size: int = 256, seed: int = 0, val_attack: Any = None) -> None:
        """``val_attack``: what scores the validation split instead of ``attack`` (it selects checkpoints)."""
        self.test, self.val, self.attack, self.schedule = test, val, attack, schedule
        self.batch_size, self.seed = batch_size, seed
        self.attacks = {"val": val_attack or attack, "test": attack}

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        due = self.schedule.due(loop.epoch)
        listeners = [cb for cb in loop.callbacks if listens_to_evaluation(cb)]
        for split, data in (("val", self.val), ("test", self.test)):
            if data is None:
                continue
            if not due:
                row[f"{split}_clean_acc"] = row[f"{split}_robust_acc"] = None
                continue
            acc = evaluate(loop.evaluated, loop.dist.shard(data), self.attacks[split], self.batch_size, loop.device,
                           seed=self.seed, observers=[_Forward(loop, split, listeners)] if listeners else (),
                           crafting=loop.precision.evaluation_crafting)
            row[f"{split}_clean_acc"], row[f"{split}_robust_acc"] = reduced_accuracy(acc, loop)
            for cb in loop.callbacks:
                cb.on_evaluation_end(loop, split, row)


class FGSMAccuracy(Callback):
    """FGSM accuracy on the test subset at every evaluated epoch (for the catastrophic-overfitting watch)."""

    phase = "evaluation"

    def __init__(self, test: ImageTensors, threat: Any, batch_size: int = 256, seed: int = 0) -> None:
        self.test, self.threat, self.batch_size, self.seed = test, threat, batch_size, seed

    def _attack(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fgsm(model, x, y, self.threat)

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if row.get("test_robust_acc") is None:
            return
        acc = evaluate(loop.evaluated, loop.dist.shard(self.test), self._attack, self.batch_size, loop.device,
                       seed=self.seed, clean=False, crafting=loop.precision.evaluation_crafting)
        row["test_fgsm_acc"] = reduced_accuracy(acc, loop)[1]


class CASTracking(Callback):
    """CAS of the test subset at the epochs ``schedule`` names, attacked by ``attack``: from the evaluation's own
    test pass (its evaluation-batch hook) when that is the same attack (``rides``), else with a pass of its own."""

    phase = "evaluation"

    def __init__(self, test: ImageTensors, attack: PGDAttack, num_classes: int, schedule: Schedule,
                 batch_size: int = 256, seed: int = 0, rides: bool = False) -> None:
        self.test, self.attack, self.num_classes, self.schedule = test, attack, num_classes, schedule
        self.batch_size, self.seed, self.rides = batch_size, seed, rides
        self._riding: AttributionAccumulator | None = None  # filled by this epoch's evaluation pass
        self._done: int | None = None  # the epoch whose CAS the ride already gave

    def on_evaluation_batch(self, loop: Any, split: str, features: Any, labels: Any) -> None:
        if self.rides and split == "test" and self.schedule.due(loop.epoch):
            if self._riding is None:
                self._riding = AttributionAccumulator(loop.evaluated, self.num_classes)
            self._riding.update(features, labels)

    def on_evaluation_end(self, loop: Any, split: str, row: dict[str, Any]) -> None:
        if self._riding is not None and split == "test":
            self._record(loop, row, self._riding)
            self._riding = None

    def _record(self, loop: Any, row: dict[str, Any], observer: AttributionAccumulator) -> None:
        observer.reduce(loop.dist.sum)
        row["cas"], row["cas_attack"] = cas_score(observer.matrix()), self.attack.describe()["name"]
        self._done = loop.epoch

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if self.schedule.due(loop.epoch) and self._done != loop.epoch:
            observer = AttributionAccumulator(loop.evaluated, self.num_classes)
            evaluate(loop.evaluated, loop.dist.shard(self.test), self.attack, self.batch_size, loop.device,
                     seed=self.seed, observers=[observer], clean=False, crafting=loop.precision.evaluation_crafting)
            self._record(loop, row, observer)
        row.setdefault("cas", None)


class FinalCAS(Callback):
    """At the end, the attribution matrices of the best checkpoint and of the final model (figures and JSON in
    RUN/analysis, CAS best and last in the summary). When best is the final epoch, one computation serves both."""

    phase = "evaluation"

    def __init__(self, test: ImageTensors, classes: list[str], attack: PGDAttack, run: RunDirectory,
                 batch_size: int = 256, seed: int = 0) -> None:
        self.test, self.classes, self.attack, self.run = test, classes, attack, run
        self.batch_size, self.seed = batch_size, seed

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        """Every rank attacks its shard of the test examples (rank 0 alone would keep the others waiting in a
        collective that can time out); rank 0 reads the best checkpoint and sends its weights to the others."""
        best_path, dist = self.run.checkpoints / "best.pt", loop.dist
        best_state = load_checkpoint(best_path, loop.device) if dist.is_main and best_path.is_file() else None
        best_epoch = int(dist.broadcast(torch.tensor([best_state["epoch"] if best_state else 0], device=loop.device)))
        if best_epoch == 0:  # no best checkpoint
            return
        if dist.is_main:
            tqdm.write(f"atlens: attribution matrices of the best (epoch {best_epoch}) and last (epoch {loop.epoch}) "
                       f"models on {len(self.test)} test examples ({self.attack.describe()['name']})")
        epochs = {"best": best_epoch, "last": loop.epoch}
        shard, total = dist.shard(self.test), dist.sum if dist.enabled else None
        last = compute_cas(loop.evaluated, shard, self.classes, self.attack, self.batch_size, loop.device,
                           seed=self.seed, total=total)
        if epochs["best"] == epochs["last"]:
            best = last  # the same weights: attacking them twice would give the same matrix
        else:  # (the other ranks' copy has the checkpoint's architecture; its weights come from rank 0)
            state = best_state or {"model_spec": loop.parts.model_spec, "model": loop.evaluated.state_dict()}
            best_model = model_from_checkpoint(state, str(best_path)).to(loop.device)
            dist.broadcast_module(best_model)
            best = compute_cas(best_model, shard, self.classes, self.attack, self.batch_size, loop.device,
                               seed=self.seed, total=total)
        if not dist.is_main:
            return
        results = {"best": best, "last": last}
        for name, result in results.items():
            write_cas(result, self.run.analysis, name)
        if best is not last:
            write_comparison(best, last, ("best", "last"), self.run.analysis)
        summary.update({"cas_best": best.cas, "cas_last": last.cas, "delta_cas": best.cas - last.cas,
                        "cas_best_epoch": epochs["best"], "cas_last_epoch": epochs["last"],
                        "cas_best_robust_acc": best.robust_acc, "cas_last_robust_acc": last.robust_acc,
                        "cas_attack": self.attack.describe()})


class OverfitWatch(Callback):
    """Catastrophic overfitting (Wong et al. 2020): test PGD accuracy collapsing while FGSM accuracy rises."""

    phase = "signals"

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.epoch: int | None = None

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if row.get("test_robust_acc") is None or row.get("test_fgsm_acc") is None:
            return
        self.history.append({k: row[k] for k in ("epoch", "test_robust_acc", "test_fgsm_acc")})
        if self.epoch is None:
            self.epoch = catastrophic_overfitting(self.history)
            if self.epoch is not None:
                row["catastrophic_overfitting"] = True
                if loop.dist.is_main:
                    tqdm.write(f"atlens: catastrophic overfitting at epoch {self.epoch}: test PGD accuracy collapsed "
                               f"to {row['test_robust_acc']:.3f} while FGSM accuracy rose to "
                               f"{row['test_fgsm_acc']:.3f} (the best checkpoint predates it; consider a smaller "
                               f"step, GradAlign or PGD-AT)")

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        summary["catastrophic_overfitting_epoch"] = self.epoch

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.epoch = list(state["history"]), state["epoch"]


class MetricsFile(Callback):
    """One JSON line per epoch in RUN/metrics.jsonl (rank 0); on resume, lines written after the
    checkpoint are dropped, so the file continues exactly where the checkpoint stands. At the end, what the
    metrics say (best and last accuracies by ``selection``, the gap) opens the summary the later callbacks see."""

    phase = "metrics"

    def __init__(self, run: RunDirectory, selection: str = "test_robust_acc") -> None:
        self.run, self.selection = run, selection
        self.resumed = False

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if loop.dist.is_main:
            combined = {**summarize(self.run.read_metrics(), self.selection), **summary}
            summary.clear()
            summary.update(combined)

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        row["seconds"] = round(time.perf_counter() - loop.epoch_started, 3)
        if loop.dist.is_main:
            self.run.append_metrics(row)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resumed = True

    def on_fit_start(self, loop: Any) -> None:
        if self.resumed and loop.dist.is_main:
            self.run.truncate_metrics(loop.epoch)


class Checkpoints(Callback):
    """best.pt (by ``selection``), last.pt and every ``every`` epochs epoch-N.pt, written by rank 0; when a signal
    stops training inside an epoch, interrupted.pt (what the run resumes from; removed once last.pt is newer)."""

    phase = "checkpoint"

    def __init__(self, run: RunDirectory, selection: str, every: int = 0) -> None:
        self.run, self.selection, self.every = run, selection, every
        self.best_value, self.best_epoch = -math.inf, None

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        value = row.get(self.selection)
        improved = value is not None and value > self.best_value
        if improved:
            self.best_value, self.best_epoch = value, loop.epoch
        if not loop.dist.is_main:
            return
        state = {**loop.state_dict(), "selection": self.selection, "best_epoch": self.best_epoch}
        folder = self.run.checkpoints
        if improved:
            save_checkpoint(state, folder / "best.pt")
        if self.every and loop.epoch % self.every == 0:
            save_checkpoint(state, folder / f"epoch-{loop.epoch}.pt")
        save_checkpoint(state, folder / "last.pt")
        (folder / INTERRUPTED).unlink(missing_ok=True)

    def on_stop(self, loop: Any) -> None:
        if loop.dist.is_main:
            state = {**loop.state_dict(), "selection": self.selection, "best_epoch": self.best_epoch}
            save_checkpoint(state, self.run.checkpoints / INTERRUPTED)

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]


class Curves(Callback):
    """RUN/curves.png, redrawn at most every ``interval`` seconds (on tiny runs a figure costs more than
    an epoch) and at the end."""

    phase = "display"

    def __init__(self, run: RunDirectory, title: str, selection: str | None = None, interval: float = 20.0,
                 classes: list[str] | None = None) -> None:
        self.run, self.title, self.selection, self.interval = run, title, selection, interval
        self.classes = classes
        self.last = time.monotonic()

    def _plot(self) -> None:
        from atlens.plots.curves import plot_curves

        plot_curves(self.run.read_metrics(), self.run.curves, self.title, self.selection, self.classes)
        self.last = time.monotonic()

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if loop.dist.is_main and time.monotonic() - self.last > self.interval:
            self._plot()

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if loop.dist.is_main:
            self._plot()


class Progress(Callback):
    """Progress bars on a terminal; one line per epoch otherwise (logs, nohup, SLURM)."""

    phase = "display"

    def __init__(self, enabled: bool = True, evaluation_every: int = 1) -> None:
        self.enabled, self.evaluation_every = enabled, evaluation_every
        self.epochs: tqdm | None = None
        self.steps: tqdm | None = None
        self.timed: list[float] | None = []  # the seconds of this process's first epochs, until the estimate

    def on_fit_start(self, loop: Any) -> None:
        self.enabled = self.enabled and loop.dist.is_main
        self.tty = sys.stderr.isatty()
        if self.enabled and self.tty:
            self.epochs = tqdm(total=loop.epochs, initial=loop.epoch, desc="epochs", unit="ep")

    def on_step_end(self, loop: Any, out: Any) -> None:
        if self.epochs is None:
            return
        if self.steps is None:
            self.steps = tqdm(total=loop.batches, initial=loop.position - 1, desc=f"epoch {loop.epoch + 1}",
                              unit="batch", leave=False)
        self.steps.update()

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps = None
        if not self.enabled:
            return
        self._estimate(loop, row)
        if self.epochs is not None:
            self.epochs.update()
            if row.get("test_robust_acc") is not None:
                self.epochs.set_postfix(test_ra=f"{row['test_robust_acc']:.3f}",
                                        train_ra=f"{row['train_robust_acc']:.3f}")
        elif row.get("test_robust_acc") is not None:
            print(f"epoch {loop.epoch}/{loop.epochs}: train robust acc {row['train_robust_acc']:.3f}, "
                  f"test robust acc {row['test_robust_acc']:.3f} ({row.get('seconds', 0):.1f} s)", flush=True)

    def _estimate(self, loop: Any, row: dict[str, Any]) -> None:
        """Once a whole evaluation period has been timed, the time the rest of the run will take."""
        if self.timed is None:
            return
        self.timed.append(row.get("seconds", 0.0))
        if len(self.timed) < max(self.evaluation_every, 1):
            return
        left = loop.epochs - loop.epoch
        per_epoch, self.timed = sum(self.timed) / len(self.timed), None
        if left > 0:
            line = (f"estimated time: about {duration(per_epoch * left)} for the {count(left, 'remaining epoch')} "
                    f"({per_epoch:.1f} s per epoch, evaluations included)")
            (self.epochs.write if self.epochs is not None else print)(line, file=sys.stderr)

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if self.epochs is not None:
            self.epochs.close()
