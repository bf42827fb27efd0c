"""The training loop: one epoch = craft, loss, step for every batch, then evaluate and checkpoint.

Methods are objects chosen by configuration (the objective here; criteria, weight perturbations and
weight averaging plug in around ``loss``); the loop itself stays method-agnostic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from atlens.analysis import AttributionAccumulator, CASResult, cas_score, compute_cas
from atlens.analysis.lsc import LSCStats
from atlens.attacks import ThreatModel, fgsm
from atlens.config import RunConfig, save_config
from atlens.data import BatchLoader, PreparedData, prepare_data
from atlens.errors import CheckpointError, ConfigError, NonFiniteLossError
from atlens.evaluation import Accuracy, PGDAttack, evaluate
from atlens.models import build_model
from atlens.runs import (
    RunDirectory,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    write_json,
)
from atlens.training import distributed, runtime
from atlens.training.criteria import CRITERIA
from atlens.training.monitors import catastrophic_overfitting
from atlens.training.objectives import OBJECTIVES, Objective, StepOutput, TrainAttack
from atlens.training.schedules import learning_rate
from atlens.training.summary import best_and_last_cas, summarize
from atlens.training.teachers import resolve_teacher
from atlens.weightspace import AVERAGING, PERTURBATIONS

# hook(trainer, epoch, row) may add entries to the epoch's metrics row before it is written
EpochHook = Callable[["Trainer", int, dict[str, Any]], None]


class Trainer:
    def __init__(self, cfg: RunConfig, out: str | Path, hooks: list[EpochHook] | None = None) -> None:
        self.cfg = cfg
        self.run = RunDirectory(out)
        self.hooks = list(hooks or [])
        device = runtime.select_device(cfg.runtime.device)
        self.dist = distributed.from_environment(device)
        self.device = self.dist.device(device)
        runtime.configure_threads(cfg.runtime.threads)
        torch.manual_seed(cfg.seed)
        d = cfg.data
        with self._main_rank_first():  # rank 0 fills the decoded-image cache, the others read it
            self.data: PreparedData = prepare_data(d.name, d.root, d.download, d.val_split, d.per_class, cfg.seed,
                                                   d.options, d.label_noise)
        info = self.data.info
        self.model_spec = {"name": cfg.model.name, "options": cfg.model.options, "num_classes": info.num_classes,
                           "channels": info.channels, "image_size": info.image_size, "mean": list(info.mean),
                           "std": list(info.std), "classes": info.classes}
        self.model = build_model(cfg.model.name, info.num_classes, info.channels, info.image_size, info.mean,
                                 info.std, cfg.model.options).to(self.device)
        if self.dist.enabled and cfg.runtime.sync_batchnorm:
            if self.device.type != "cuda":
                raise ConfigError("runtime.sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); "
                                  "on CPU each rank normalises with its own shard's statistics")
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.channels_last = runtime.use_channels_last(cfg.runtime, self.model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # attacks, weight perturbations and averaging work on self.model; the training loss runs through
        # the DDP wrapper so that its backward averages gradients across ranks
        self.train_model = self.dist.wrap(self.model)
        if self.dist.rank:
            torch.manual_seed(cfg.seed + self.dist.rank)  # independent random starts on each rank
        a = cfg.attack
        self.threat = ThreatModel(a.norm, a.epsilon, info.bounds)
        attack = TrainAttack(self.threat, a.steps, a.step_size, a.random_start, a.bn_mode)
        self.objective: Objective = OBJECTIVES.build(cfg.objective.name, cfg.objective.options, "objective",
                                                     attack=attack)
        self.criterion = CRITERIA.build(cfg.criterion.name, cfg.criterion.options, "criterion", device=self.device)
        self.perturbation = PERTURBATIONS.build(cfg.perturbation.name, cfg.perturbation.options, "perturbation")
        self.averaging = AVERAGING.build(cfg.averaging.name, cfg.averaging.options, "averaging")
        self.lsc = LSCStats(getattr(self.perturbation, "c_min", None))
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay, nesterov=o.nesterov)
        self.scaler = runtime.grad_scaler(cfg.runtime, self.device)
        augment = d.augment if d.augment is not None else bool(info.crop_padding or info.flip)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.train_loader = BatchLoader(self.data.train, d.batch_size, self.device, shuffle=True,
                                        crop_padding=info.crop_padding if augment else 0,
                                        flip=info.flip and augment, generator=self.generator,
                                        shard=(self.dist.rank, self.dist.world))
        e = cfg.eval
        self.eval_attack = PGDAttack(self.threat, e.steps, e.step_size, e.restarts, random_start=e.random_start)
        self.test_set = self.data.test.head(e.examples)
        self.val_set = self.data.val.head(e.examples) if self.data.val is not None else None
        # a standard-trained model (e.g. a KD teacher) is selected by clean accuracy, all others by robust
        kind = "clean" if cfg.objective.name == "standard" else "robust"
        self.selection = f"{'val' if self.val_set is not None else 'test'}_{kind}_acc"
        self.watch_fgsm = e.fgsm if e.fgsm is not None else cfg.objective.name == "fast_at"
        self.co_epoch: int | None = None
        self.epoch = 0  # epochs completed
        self.best_value, self.best_epoch = -math.inf, None
        self._last_plot = time.monotonic()

    # ----------------------------------------------------------------- lifecycle
    @contextmanager
    def _main_rank_first(self) -> Iterator[None]:
        if not self.dist.is_main:
            self.dist.barrier()
        yield
        if self.dist.is_main:
            self.dist.barrier()

    def start(self) -> None:
        """Create the run directory (refusing to overwrite another run) and write its config."""
        if (self.run.checkpoints / "last.pt").is_file():
            raise ConfigError(f"{self.run.path} already holds a run; resume it with "
                              f"'atlens train --resume {self.run.path}' or choose another --out")
        self.dist.barrier()  # every rank has checked before rank 0 writes
        self._load_teachers()
        if not self.dist.is_main:
            return
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.run.metrics.unlink(missing_ok=True)  # a run that never reached its first checkpoint
        save_config(self.cfg, self.run.config)
        write_json(self.run.path / "methods.json", self.methods())
        write_json(self.run.path / "data.json", {
            "dataset": self.data.info.name, "classes": self.data.info.classes, "train_examples": len(self.data.train),
            "val_examples": len(self.data.val) if self.data.val is not None else 0,
            "test_examples": len(self.data.test), "eval_examples": len(self.test_set),
            "val_indices": self.data.val_indices, "selection": self.selection,
        })

    def resume(self) -> None:
        path = self.run.checkpoints / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"{self.run.path} has no checkpoints/last.pt to resume from")
        state = load_checkpoint(path, self.device)
        load_weights(self.model, state.get("training_model", state["model"]), str(path))
        self.averaging.load_state_dict(self.model, state.get("averaging"))
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self._load_teachers()
        self.epoch = state["epoch"]
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.generator.set_state(state["rng"]["loader"])
        runtime.set_rng_state(state["rng"], self.device)
        if self.dist.rank:
            torch.manual_seed(self.cfg.seed + self.dist.rank + 100_003 * self.epoch)
        if self.dist.is_main:
            self.run.truncate_metrics(self.epoch)

    def _load_teachers(self) -> None:
        if hasattr(self.criterion, "load_teachers"):
            self.criterion.load_teachers(lambda role, spec: resolve_teacher(self.run.path, role, spec))

    def methods(self) -> dict[str, Any]:
        """What this run composes, with the resolved teacher paths: saved as methods.json."""
        return {"objective": self.cfg.objective.name, "criterion": self.criterion.describe(),
                "perturbation": self.perturbation.describe(), "averaging": self.averaging.describe()}

    @property
    def evaluated_model(self) -> torch.nn.Module:
        """The model that is evaluated, checkpointed and analysed: the weight average once it exists."""
        return self.averaging.evaluated(self.model)

    def fit(self) -> dict[str, Any]:
        epochs = self.cfg.optim.epochs
        main = self.dist.is_main
        bar = tqdm(range(self.epoch, epochs), desc="epochs", unit="ep", initial=self.epoch, total=epochs,
                   disable=not (self.cfg.runtime.progress and main))
        for epoch in bar:
            row = self.train_epoch(epoch)
            self.epoch = epoch + 1
            if not main:  # rows are identical on every rank (reduced); only rank 0 writes
                self._track_best(row)
                continue
            self._watch(row)
            for hook in self.hooks:
                hook(self, epoch + 1, row)
            # metrics first: a crash before the checkpoint is then undone by truncation on resume
            self.run.append_metrics(row)
            self._checkpoint(row)
            if time.monotonic() - self._last_plot > 20 or self.epoch == epochs:
                self._plot()  # throttled: on tiny runs a figure costs more than an epoch
            if row.get("test_robust_acc") is not None:
                bar.set_postfix(test_ra=f"{row['test_robust_acc']:.3f}", train_ra=f"{row['train_robust_acc']:.3f}")
        if not main:
            self.dist.barrier()  # rank 0 writes the summary and the final CAS
            return {}
        rows = self.run.read_metrics()
        summary = summarize(rows, self.selection)
        if self.watch_fgsm:
            summary["catastrophic_overfitting_epoch"] = catastrophic_overfitting(rows)
        if self.cfg.analysis.cas_every and summary.get("best_epoch") is not None:
            summary.update(best_and_last_cas(self.run, self.evaluated_model, self.epoch,
                                              self._measure_cas, self.device))
        write_json(self.run.summary, summary)
        self.dist.barrier()
        return summary

    def _watch(self, row: dict[str, Any]) -> None:
        if not self.watch_fgsm or self.co_epoch is not None:
            return
        self.co_epoch = catastrophic_overfitting(self.run.read_metrics() + [row])
        if self.co_epoch is not None:
            row["catastrophic_overfitting"] = True
            tqdm.write(f"atlens: catastrophic overfitting at epoch {self.co_epoch}: test PGD accuracy collapsed to "
                       f"{row['test_robust_acc']:.3f} while FGSM accuracy rose to {row['test_fgsm_acc']:.3f} "
                       f"(the best checkpoint predates it; consider a smaller step, GradAlign or PGD-AT)")

    def _measure_cas(self, model: torch.nn.Module) -> CASResult:
        return compute_cas(model, self.test_set, self.data.info.classes, self.eval_attack, self.cfg.eval.batch_size,
                           self.device, seed=self.cfg.seed)

    # ----------------------------------------------------------------- one epoch
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        o = cfg.optim
        started = time.perf_counter()
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        batches = len(self.train_loader)
        loader = tqdm(self.train_loader, desc=f"epoch {epoch + 1}", unit="batch", leave=False,
                      disable=not cfg.runtime.progress)
        for i, (x, y) in enumerate(loader):
            lr = learning_rate(o.schedule, o.lr, o.epochs, epoch + i / batches, o.milestones, o.gamma)
            try:
                out = self.train_step(x, y, lr, epoch)
            except NonFiniteLossError as err:
                raise NonFiniteLossError(
                    f"{err} at epoch {epoch + 1}, batch {i + 1} (lr {lr:g}); lower optim.lr or check the data. "
                    f"The last good checkpoint is {self.run.checkpoints / 'last.pt'}"
                ) from None
            loss_sum += out.loss.detach() * len(y)
            correct += (out.logits.detach().argmax(1) == y).sum()
            seen += len(y)
            self.lsc.update(out.per_example)
        totals = self.dist.sum(torch.stack([loss_sum.double(), correct.double(), torch.tensor(seen, dtype=torch.float64,
                                                                                            device=self.device)]))
        loss_sum, correct, seen = totals[0], totals[1], totals[2].item()
        self.lsc.reduce(self.dist.sum)
        bn_data = BatchLoader(self.data.train, cfg.data.batch_size, self.device)  # clean, in order
        self.averaging.after_epoch(self.model, epoch + 1, o.epochs, o.milestones, bn_data)
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum.item() / seen,
                               "train_robust_acc": correct.item() / seen}
        row.update(self.lsc.epoch_row())
        row.update(self.perturbation.epoch_stats())
        if self.averaging.name != "none":
            row["evaluated_model"] = self.averaging.name if self.averaging.averaged is not None else "model"
        row.update(self.evaluate_epoch(epoch + 1))
        row["seconds"] = round(time.perf_counter() - started, 3)
        return row

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, epoch: int = 0) -> StepOutput:
        """Craft the training inputs at w, perturb the weights (AWP/RWP), take one optimiser step on the
        objective's loss at w + v, restore, and update the weight average."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with runtime.autocast(self.cfg.runtime, self.device, crafting=True):
            batch = self.objective.craft(self.model, x, y)
            self.perturbation.perturb(self.model, batch.x_adv, y, epoch)
        with runtime.autocast(self.cfg.runtime, self.device):
            out = self.objective.loss(self.train_model, batch, self.criterion)
        if not torch.isfinite(out.loss):
            self.perturbation.restore(self.model)
            raise NonFiniteLossError(f"training loss became {out.loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)  # fp16: skipped when the scaled gradients overflowed
        self.scaler.update()
        self.perturbation.restore(self.model)
        o = self.cfg.optim
        self.averaging.after_step(self.model, epoch + 1, o.epochs, o.milestones)
        return out

    def evaluate_epoch(self, epoch: int) -> dict[str, Any]:
        e = self.cfg.eval
        cas_every = self.cfg.analysis.cas_every
        cas_due = bool(cas_every) and (epoch % cas_every == 0 or epoch == self.cfg.optim.epochs)
        due = cas_due or epoch % e.every == 0 or epoch == self.cfg.optim.epochs
        row: dict[str, Any] = {}
        for prefix, data in (("val", self.val_set), ("test", self.test_set)):
            if data is None:
                continue
            if not due:
                row[f"{prefix}_clean_acc"] = row[f"{prefix}_robust_acc"] = None
                continue
            data = self.dist.shard(data)
            observers = []
            if prefix == "test" and cas_due:
                observers = [AttributionAccumulator(self.evaluated_model, self.data.info.num_classes)]
            acc = evaluate(self.evaluated_model, data, self.eval_attack, e.batch_size, self.device, seed=self.cfg.seed,
                           observers=observers)
            row[f"{prefix}_clean_acc"], row[f"{prefix}_robust_acc"] = self._reduced(acc)
            if prefix == "test" and self.watch_fgsm:
                single_step = evaluate(self.evaluated_model, data, lambda m, x, y: fgsm(m, x, y, self.threat),
                                       e.batch_size, self.device, seed=self.cfg.seed, clean=False)
                row["test_fgsm_acc"] = self._reduced(single_step)[1]
            if observers:
                observers[0].reduce(self.dist.sum)
                row["cas"] = cas_score(observers[0].matrix())
        if cas_every:
            row.setdefault("cas", None)
        return row

    def _reduced(self, acc: Accuracy) -> tuple[float, float]:
        """Clean and robust accuracy over all ranks' shards."""
        counts = torch.tensor([acc.clean * acc.examples, acc.robust * acc.examples, acc.examples],
                              dtype=torch.float64, device=self.device)
        clean, robust, total = self.dist.sum(counts).tolist()
        return clean / total, robust / total

    # ----------------------------------------------------------------- persistence
    def checkpoint_state(self) -> dict[str, Any]:
        rng = runtime.rng_state(self.device)
        rng["loader"] = self.generator.get_state()
        state = {"epoch": self.epoch, "model_spec": self.model_spec, "model": self.evaluated_model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "best_value": self.best_value,
                 "best_epoch": self.best_epoch, "selection": self.selection, "rng": rng,
                 "scaler": self.scaler.state_dict()}
        if self.averaging.averaged is not None:
            # "model" is the average (what load_model returns); SGD resumes from the raw weights
            state["training_model"] = self.model.state_dict()
            state["averaging"] = self.averaging.state_dict()
        return state

    def _track_best(self, row: dict[str, Any]) -> bool:
        value = row.get(self.selection)
        improved = value is not None and value > self.best_value
        if improved:
            self.best_value, self.best_epoch = value, self.epoch
        return improved

    def _checkpoint(self, row: dict[str, Any]) -> None:
        improved = self._track_best(row)
        state = self.checkpoint_state()
        if improved:
            save_checkpoint(state, self.run.checkpoints / "best.pt")
        every = self.cfg.checkpoint.every
        if every and self.epoch % every == 0:
            save_checkpoint(state, self.run.checkpoints / f"epoch-{self.epoch}.pt")
        save_checkpoint(state, self.run.checkpoints / "last.pt")

    def _plot(self) -> None:
        from atlens.plots.curves import plot_curves

        c = self.cfg
        title = (f"{c.objective.name} · {c.model.name} · {c.data.name} · "
                 f"{c.attack.norm} ε={c.attack.epsilon:.4g}")
        plot_curves(self.run.read_metrics(), self.run.curves, title)
        self._last_plot = time.monotonic()
