"""The per-epoch work of a training run, as callbacks (protocol: ``atlens.callback``).

``default_callbacks`` lists them in the order their rows depend on: training statistics, weight
averaging (which decides the evaluated model), method statistics, evaluation (with CAS and FGSM),
the catastrophic-overfitting watch, then the writers: metrics first, checkpoints second (a crash in
between is undone by truncating the metrics on resume), figures and loggers last.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from atlens.analysis import AttributionAccumulator, cas_score, compute_cas, write_cas, write_comparison
from atlens.analysis.lsc import LSCStats
from atlens.attacks import fgsm, threat_model
from atlens.callback import Callback
from atlens.data import ImageTensors
from atlens.errors import ConfigError
from atlens.evaluation import Accuracy, PGDAttack, evaluate
from atlens.plots.figure import format_epsilon
from atlens.runs import RunDirectory, load_checkpoint, model_from_checkpoint, save_checkpoint
from atlens.training.early_stop import EarlyStop, TrainingSignals, UnlabelledSignals, make_rule
from atlens.training.monitors import catastrophic_overfitting


class TrainingStats(Callback):
    """Mean training loss and accuracy on the training inputs (adversarial unless the objective trains
    on clean inputs), summed over data-parallel ranks."""

    def __init__(self) -> None:
        self.totals: torch.Tensor | None = None

    def on_step_end(self, loop: Any, out: Any) -> None:
        batch = torch.stack([out.loss.detach().double() * len(out.logits),
                             (out.logits.detach().argmax(1) == out.target).sum().double(),
                             torch.tensor(float(len(out.logits)), dtype=torch.float64, device=out.loss.device)])
        self.totals = batch if self.totals is None else self.totals + batch

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        loss, correct, seen = loop.dist.sum(self.totals).tolist()
        row["train_loss"], row["train_robust_acc"] = loss / seen, correct / seen
        self.totals = None


class LSCStatistics(Callback):
    """Where the training losses sit (Yu et al.'s LSC groups), and the share below the weight
    perturbation's loss threshold when it has one (RWP's c_min)."""

    def __init__(self, threshold: float | None) -> None:
        self.stats = LSCStats(threshold)

    def on_step_end(self, loop: Any, out: Any) -> None:
        self.stats.update(out.per_example)

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        self.stats.reduce(loop.dist.sum)
        row.update(self.stats.epoch_row())


class Evaluate(Callback):
    """Clean and PGD accuracy on the validation and test subsets every ``every`` epochs (and at the
    last), FGSM accuracy when asked, and CAS every ``cas_every`` epochs with ``cas_attack`` (riding on
    the evaluation's own pass when that is the same attack). At the end, the attribution matrices of
    the best checkpoint and of the final model, and the CAS paper's Table 1 rows."""

    def __init__(self, test: ImageTensors, val: ImageTensors | None, attack: PGDAttack, classes: list[str],
                 epochs: int, every: int = 1, batch_size: int = 256, seed: int = 0, fgsm: bool = False,
                 cas_every: int = 0, cas_attack: PGDAttack | None = None, run: RunDirectory | None = None) -> None:
        self.test, self.val, self.attack, self.classes = test, val, attack, classes
        self.epochs, self.every, self.batch_size, self.seed = epochs, every, batch_size, seed
        self.fgsm, self.cas_every, self.run = fgsm, cas_every, run
        self.cas_attack = cas_attack or attack

    def _due(self, epoch: int, every: int) -> bool:
        return bool(every) and (epoch % every == 0 or epoch == self.epochs)

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        epoch, model, dist = loop.epoch, loop.evaluated, loop.dist
        cas_due = self._due(epoch, self.cas_every)
        due = cas_due or self._due(epoch, self.every)
        for prefix, data in (("val", self.val), ("test", self.test)):
            if data is None:
                continue
            if not due:
                row[f"{prefix}_clean_acc"] = row[f"{prefix}_robust_acc"] = None
                continue
            shard = dist.shard(data)
            riding = prefix == "test" and cas_due and self.cas_attack == self.attack
            observers = [AttributionAccumulator(model, len(self.classes))] if riding else []
            crafting = loop.parts.precision.evaluation_crafting
            acc = evaluate(model, shard, self.attack, self.batch_size, loop.device, seed=self.seed, observers=observers,
                           crafting=crafting)
            row[f"{prefix}_clean_acc"], row[f"{prefix}_robust_acc"] = self._reduced(acc, loop)
            if prefix == "test" and self.fgsm:
                single = evaluate(model, shard, self._fgsm, self.batch_size, loop.device, seed=self.seed, clean=False,
                                  crafting=crafting)
                row["test_fgsm_acc"] = self._reduced(single, loop)[1]
            if prefix == "test" and cas_due and not riding:
                observers = [AttributionAccumulator(model, len(self.classes))]
                evaluate(model, shard, self.cas_attack, self.batch_size, loop.device, seed=self.seed,
                         observers=observers, clean=False, crafting=crafting)
            if observers:
                observers[0].reduce(dist.sum)
                row["cas"] = cas_score(observers[0].matrix())
                row["cas_attack"] = self.cas_attack.describe()["name"]
        if self.cas_every:
            row.setdefault("cas", None)

    def _fgsm(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fgsm(model, x, y, self.attack.threat)

    @staticmethod
    def _reduced(acc: Accuracy, loop: Any) -> tuple[float, float]:
        """Clean and robust accuracy over all ranks' shards."""
        counts = torch.tensor([acc.clean * acc.examples, acc.robust * acc.examples, acc.examples],
                              dtype=torch.float64, device=loop.device)
        clean, robust, total = loop.dist.sum(counts).tolist()
        return clean / total, robust / total

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        best_path = self.run.checkpoints / "best.pt" if self.run else None
        if not (self.cas_every and loop.dist.is_main and best_path and best_path.is_file()):
            return
        best_state = load_checkpoint(best_path, loop.device)
        best_model = model_from_checkpoint(best_state, str(best_path)).to(loop.device)
        results = {name: compute_cas(model, self.test, self.classes, self.cas_attack, self.batch_size, loop.device,
                                     seed=self.seed)
                   for name, model in (("best", best_model), ("last", loop.evaluated))}
        for name, result in results.items():
            write_cas(result, self.run.analysis, name)
        write_comparison(results["best"], results["last"], ("best", "last"), self.run.analysis)
        early = {r["epoch"]: r for r in self.run.read_metrics()}.get(10, {})
        table = [{"when": "epoch 10", "epoch": 10 if early else None, "cas": early.get("cas"),
                  "robust_acc": early.get("test_robust_acc")}]
        for name, epoch in (("best", best_state["epoch"]), ("last", loop.epoch)):
            table.append({"when": name, "epoch": epoch, "cas": results[name].cas,
                          "robust_acc": results[name].robust_acc})
        summary.update({"cas_best": results["best"].cas, "cas_last": results["last"].cas,
                        "delta_cas": results["best"].cas - results["last"].cas, "cas_table": table,
                        "cas_attack": self.cas_attack.describe()})


class OverfitWatch(Callback):
    """Catastrophic overfitting (Wong et al. 2020): test PGD accuracy collapsing while FGSM accuracy rises."""

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
    checkpoint are dropped, so the file continues exactly where the checkpoint stands."""

    def __init__(self, run: RunDirectory) -> None:
        self.run = run
        self.resumed = False

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
    """best.pt (by ``selection``), last.pt and every ``every`` epochs epoch-N.pt, written by rank 0."""

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

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]


class Curves(Callback):
    """RUN/curves.png, redrawn at most every ``interval`` seconds (on tiny runs a figure costs more than
    an epoch) and at the end."""

    def __init__(self, run: RunDirectory, title: str, selection: str | None = None, interval: float = 20.0) -> None:
        self.run, self.title, self.selection, self.interval = run, title, selection, interval
        self.last = time.monotonic()

    def _plot(self) -> None:
        from atlens.plots.curves import plot_curves

        plot_curves(self.run.read_metrics(), self.run.curves, self.title, self.selection)
        self.last = time.monotonic()

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if loop.dist.is_main and time.monotonic() - self.last > self.interval:
            self._plot()

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if loop.dist.is_main:
            self._plot()


class TensorBoard(Callback):
    """Every numeric entry of the epoch's row as a TensorBoard scalar in RUN/tensorboard (rank 0);
    needs the optional ``tensorboard`` package (``pip install 'atlens[tensorboard]'``)."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("runtime.tensorboard needs the tensorboard package: "
                             "pip install 'atlens[tensorboard]'") from None
        self.folder, self.writer_class, self.writer = folder, SummaryWriter, None

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if not loop.dist.is_main:
            return
        if self.writer is None:
            self.writer = self.writer_class(str(self.folder))
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, loop.epoch)
        self.writer.flush()

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress(Callback):
    """Progress bars on a terminal; one line per epoch otherwise (logs, nohup, SLURM)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.epochs: tqdm | None = None
        self.steps: tqdm | None = None

    def on_fit_start(self, loop: Any) -> None:
        self.enabled = self.enabled and loop.dist.is_main
        self.tty = sys.stderr.isatty()
        if self.enabled and self.tty:
            total = loop.cfg.optim.epochs
            self.epochs = tqdm(total=total, initial=loop.epoch, desc="epochs", unit="ep")

    def on_step_end(self, loop: Any, out: Any) -> None:
        if self.epochs is None:
            return
        if self.steps is None:
            self.steps = tqdm(total=loop.batches, desc=f"epoch {loop.epoch + 1}", unit="batch", leave=False)
        self.steps.update()

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps = None
        if not self.enabled:
            return
        if self.epochs is not None:
            self.epochs.update()
            if row.get("test_robust_acc") is not None:
                self.epochs.set_postfix(test_ra=f"{row['test_robust_acc']:.3f}",
                                        train_ra=f"{row['train_robust_acc']:.3f}")
        elif row.get("test_robust_acc") is not None:
            print(f"epoch {loop.epoch}/{loop.cfg.optim.epochs}: train robust acc {row['train_robust_acc']:.3f}, "
                  f"test robust acc {row['test_robust_acc']:.3f} ({row.get('seconds', 0):.1f} s)", flush=True)

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if self.epochs is not None:
            self.epochs.close()


def default_callbacks(parts: Any, run: RunDirectory, extra: Sequence[Callback] = ()) -> list[Callback]:
    """The callbacks of an atlens run, configured from ``parts.cfg``; ``extra`` (a user's) run after the
    evaluation and before the writers, so what they add to a row is written and checkpointed with it."""
    cfg, data, info = parts.cfg, parts.data, parts.data.info
    e = cfg.eval
    threat = threat_model(cfg.attack, info.bounds)
    attack = PGDAttack(threat, e.steps, e.step_size, e.restarts, random_start=e.random_start)
    cas_attack = (attack if cfg.analysis.cas_attack == "eval"
                  else PGDAttack(threat, int(cfg.analysis.cas_attack[3:])))
    test = data.test.evaluation_subset(e.examples, cfg.seed)
    val = data.val.evaluation_subset(e.examples, cfg.seed) if data.val is not None else None
    if cfg.analysis.cas_every and len(test.labels.unique()) < info.num_classes:
        raise ConfigError(f"eval.examples: CAS tracking (analysis.cas_every) needs every class in the evaluation "
                          f"subset, but {len(test)} examples cover {len(test.labels.unique())} of the "
                          f"{info.num_classes} classes; use at least {info.num_classes} examples")
    objective = parts.objective
    selection = f"{'val' if val is not None else 'test'}_{objective.selects_by}_acc"
    watch = e.fgsm if e.fgsm is not None else objective.watches_catastrophic_overfitting
    c = cfg
    model = c.model.name + (f":{c.model.options['arch']}" if "arch" in c.model.options else "")
    title = (f"{c.objective.name} · {model} · {c.data.name} · "
             f"{c.attack.norm} ε = {format_epsilon(c.attack.epsilon)}")
    callbacks: list[Callback] = [
        TrainingStats(), parts.averaging, LSCStatistics(parts.perturbation.loss_threshold), parts.perturbation,
        Evaluate(test, val, attack, info.classes, cfg.optim.epochs, e.every, e.batch_size,
                 cfg.seed, fgsm=watch, cas_every=cfg.analysis.cas_every, cas_attack=cas_attack, run=run),
    ]
    if watch:
        callbacks.append(OverfitWatch())
    callbacks.insert(3, TrainingSignals(info.num_classes))  # beside the LSC statistics, before the evaluation
    if data.unlabelled is not None:  # after the evaluation: its signals are read at evaluated epochs
        callbacks.append(UnlabelledSignals(data.unlabelled, attack, info.num_classes, e.batch_size, cfg.seed))
    if isinstance(parts.criterion, Callback):  # a criterion with state or hooks (cross_class)
        callbacks.insert(0, parts.criterion)
    rule = make_rule(cfg.early_stop)
    if rule is not None:
        callbacks.append(EarlyStop(rule, cfg.early_stop.stop, run))
    callbacks += [*extra, MetricsFile(run), Checkpoints(run, selection, cfg.checkpoint.every),
                  Curves(run, title, selection)]
    if cfg.runtime.tensorboard:
        callbacks.append(TensorBoard(run.path / "tensorboard"))
    callbacks.append(Progress(cfg.runtime.progress))
    return callbacks


def selection_metric(callbacks: list[Callback]) -> str | None:
    return next((cb.selection for cb in callbacks if isinstance(cb, Checkpoints)), None)
