"""The training loop: one epoch = craft, loss, step for every batch, then evaluate and checkpoint.

Methods are objects chosen by configuration (the objective here; criteria, weight perturbations and
weight averaging plug in around ``loss``); the loop itself stays method-agnostic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from atlens.analysis import AttributionAccumulator, cas_score, compute_cas, write_cas, write_comparison
from atlens.attacks import ThreatModel
from atlens.config import RunConfig, save_config
from atlens.data import BatchLoader, PreparedData, prepare_data
from atlens.errors import CheckpointError, ConfigError, NonFiniteLossError
from atlens.evaluation import PGDAttack, evaluate
from atlens.models import build_model
from atlens.runs import (
    RunDirectory,
    load_checkpoint,
    load_weights,
    model_from_checkpoint,
    save_checkpoint,
    write_json,
)
from atlens.training import runtime
from atlens.training.objectives import OBJECTIVES, Objective, StepOutput, TrainAttack, cross_entropy
from atlens.training.schedules import learning_rate
from atlens.training.summary import summarize

# hook(trainer, epoch, row) may add entries to the epoch's metrics row before it is written
EpochHook = Callable[["Trainer", int, dict[str, Any]], None]


class Trainer:
    def __init__(self, cfg: RunConfig, out: str | Path, hooks: list[EpochHook] | None = None) -> None:
        self.cfg = cfg
        self.run = RunDirectory(out)
        self.hooks = list(hooks or [])
        self.device = runtime.select_device(cfg.runtime.device)
        runtime.configure_threads(cfg.runtime.threads)
        torch.manual_seed(cfg.seed)
        d = cfg.data
        self.data: PreparedData = prepare_data(d.name, d.root, d.download, d.val_split, d.per_class, cfg.seed,
                                               d.options)
        info = self.data.info
        self.model_spec = {"name": cfg.model.name, "options": cfg.model.options, "num_classes": info.num_classes,
                           "channels": info.channels, "image_size": info.image_size, "mean": list(info.mean),
                           "std": list(info.std), "classes": info.classes}
        self.model = build_model(cfg.model.name, info.num_classes, info.channels, info.image_size, info.mean,
                                 info.std, cfg.model.options).to(self.device)
        self.channels_last = runtime.use_channels_last(cfg.runtime, self.model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        a = cfg.attack
        self.threat = ThreatModel(a.norm, a.epsilon, info.bounds)
        attack = TrainAttack(self.threat, a.steps, a.step_size, a.random_start, a.bn_mode)
        self.objective: Objective = OBJECTIVES.build(cfg.objective.name, cfg.objective.options, "objective",
                                                     attack=attack)
        self.criterion = cross_entropy
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay, nesterov=o.nesterov)
        augment = d.augment if d.augment is not None else bool(info.crop_padding or info.flip)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.train_loader = BatchLoader(self.data.train, d.batch_size, self.device, shuffle=True,
                                        crop_padding=info.crop_padding if augment else 0,
                                        flip=info.flip and augment, generator=self.generator)
        e = cfg.eval
        self.eval_attack = PGDAttack(self.threat, e.steps, e.step_size, e.restarts)
        self.test_set = self.data.test.head(e.examples)
        self.val_set = self.data.val.head(e.examples) if self.data.val is not None else None
        self.selection = "val_robust_acc" if self.val_set is not None else "test_robust_acc"
        self.epoch = 0  # epochs completed
        self.best_value, self.best_epoch = -math.inf, None
        self._last_plot = time.monotonic()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Create the run directory (refusing to overwrite another run) and write its config."""
        if self.run.exists():
            raise ConfigError(f"{self.run.path} already holds a run; resume it with "
                              f"'atlens train --resume {self.run.path}' or choose another --out")
        self.run.path.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run.config)
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
        load_weights(self.model, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = state["epoch"]
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.generator.set_state(state["rng"]["loader"])
        runtime.set_rng_state(state["rng"], self.device)
        self.run.truncate_metrics(self.epoch)

    def fit(self) -> dict[str, Any]:
        epochs = self.cfg.optim.epochs
        bar = tqdm(range(self.epoch, epochs), desc="epochs", unit="ep", initial=self.epoch, total=epochs,
                   disable=not self.cfg.runtime.progress)
        for epoch in bar:
            row = self.train_epoch(epoch)
            for hook in self.hooks:
                hook(self, epoch + 1, row)
            self.epoch = epoch + 1
            # metrics first: a crash before the checkpoint is then undone by truncation on resume
            self.run.append_metrics(row)
            self._checkpoint(row)
            if time.monotonic() - self._last_plot > 20 or self.epoch == epochs:
                self._plot()  # throttled: on tiny runs a figure costs more than an epoch
            if row.get("test_robust_acc") is not None:
                bar.set_postfix(test_ra=f"{row['test_robust_acc']:.3f}", train_ra=f"{row['train_robust_acc']:.3f}")
        summary = summarize(self.run.read_metrics(), self.selection)
        if self.cfg.analysis.cas_every and summary.get("best_epoch") is not None:
            summary.update(self._final_cas())
        write_json(self.run.summary, summary)
        return summary

    def _final_cas(self) -> dict[str, Any]:
        """Matrices of the best and last checkpoints on the evaluation subset, and Table 1's rows."""
        best_state = load_checkpoint(self.run.checkpoints / "best.pt", self.device)
        best_model = model_from_checkpoint(best_state, "best.pt").to(self.device)
        classes = self.data.info.classes
        results = {name: compute_cas(model, self.test_set, classes, self.eval_attack, self.cfg.eval.batch_size,
                                     self.device, seed=self.cfg.seed)
                   for name, model in (("best", best_model), ("last", self.model))}
        for name, result in results.items():
            write_cas(result, self.run.analysis, name)
        write_comparison(results["best"], results["last"], ("best", "last"), self.run.analysis)
        rows = {r["epoch"]: r for r in self.run.read_metrics()}
        early = rows.get(10, {})
        table = [{"when": "epoch 10", "epoch": 10 if early else None, "cas": early.get("cas"),
                  "robust_acc": early.get("test_robust_acc")}]
        for name, epoch in (("best", best_state["epoch"]), ("last", self.epoch)):
            table.append({"when": name, "epoch": epoch, "cas": results[name].cas,
                          "robust_acc": results[name].robust_acc})
        return {"cas_best": results["best"].cas, "cas_last": results["last"].cas,
                "delta_cas": results["best"].cas - results["last"].cas, "cas_table": table}

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
                out = self.train_step(x, y, lr)
            except NonFiniteLossError as err:
                raise NonFiniteLossError(
                    f"{err} at epoch {epoch + 1}, batch {i + 1} (lr {lr:g}); lower optim.lr or check the data. "
                    f"The last good checkpoint is {self.run.checkpoints / 'last.pt'}"
                ) from None
            loss_sum += out.loss.detach() * len(y)
            correct += (out.logits.detach().argmax(1) == y).sum()
            seen += len(y)
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum.item() / seen,
                               "train_robust_acc": correct.item() / seen}
        row.update(self.evaluate_epoch(epoch + 1))
        row["seconds"] = round(time.perf_counter() - started, 3)
        return row

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> StepOutput:
        """Craft the training inputs, take one optimiser step on the objective's loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with runtime.autocast(self.cfg.runtime, self.device):
            batch = self.objective.craft(self.model, x, y)
            out = self.objective.loss(self.model, batch, self.criterion)
        if not torch.isfinite(out.loss):
            raise NonFiniteLossError(f"training loss became {out.loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
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
            observers = []
            if prefix == "test" and cas_due:
                observers = [AttributionAccumulator(self.model, self.data.info.num_classes)]
            acc = evaluate(self.model, data, self.eval_attack, e.batch_size, self.device, seed=self.cfg.seed,
                           observers=observers)
            row[f"{prefix}_clean_acc"], row[f"{prefix}_robust_acc"] = acc.clean, acc.robust
            if observers:
                row["cas"] = cas_score(observers[0].matrix())
        if cas_every:
            row.setdefault("cas", None)
        return row

    # ----------------------------------------------------------------- persistence
    def checkpoint_state(self) -> dict[str, Any]:
        rng = runtime.rng_state(self.device)
        rng["loader"] = self.generator.get_state()
        return {"epoch": self.epoch, "model_spec": self.model_spec, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "best_value": self.best_value,
                "best_epoch": self.best_epoch, "selection": self.selection, "rng": rng}

    def _checkpoint(self, row: dict[str, Any]) -> None:
        value = row.get(self.selection)
        improved = value is not None and value > self.best_value
        if improved:
            self.best_value, self.best_epoch = value, self.epoch
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
