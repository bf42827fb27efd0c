"""Loggers: where a run's record also goes, as callbacks a config names (``loggers: [tensorboard, {name: wandb,
project: my-project, mode: offline}, {name: mlflow, tracking_uri: file:///abs/mlruns}]``).

Each logger, on rank 0 only, records the resolved config when training starts, every numeric entry of every
epoch's row (accuracies, losses, CAS, learning rate) at step = epoch, and at the end the summary (best and
last accuracies, the robust-overfitting gap, CAS of the best and last checkpoints) and the run's figures
(curves.png, the CAS matrices and analyses) as artefacts. A resumed run continues the same W&B or MLflow run
(its id is kept in the checkpoint); a run that fails or is interrupted closes its logger run with that status.

The packages are optional extras (``pip install 'atlens[wandb]'``, ``'atlens[mlflow]'``, ``'atlens[tensorboard]'``);
``atlens train --dry-run`` says when one is missing.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from atlens.config import dotted
from atlens.errors import ConfigError
from atlens.hooks import Callback
from atlens.registry import Registry
from atlens.runs import RunDirectory

# A builder takes its own options and any of ``run`` (the RunDirectory) and ``config`` (the resolved config). The
# config check (``--dry-run``) builds each logger once with ``run=None`` to find a missing package: a logger opens
# nothing before ``open``.
LOGGERS: Registry = Registry("logger", skip=("run", "config"))


def require(package: str, extra: str, key: str) -> None:
    """Refuse a logger whose package is missing, before any data is decoded (``--dry-run`` too)."""
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"{key} needs the {package} package: pip install 'atlens[{extra}]' (or remove it from "
                          f"{key.split('[')[0]})")


def numeric(row: dict[str, Any]) -> dict[str, float]:
    """The entries of a row or summary a logger records as metrics (numbers, not flags)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}


def figures(run: RunDirectory) -> list[Path]:
    return [p for p in [run.curves, *sorted(run.analysis.glob("*.png"))] if p.is_file() and ".replaced-" not in p.name]


class Logger(Callback):
    """Opens its logger run at the start (rank 0), logs every row, closes at the end or on an exception."""

    phase = "display"

    def __init__(self, run: RunDirectory, config: dict[str, Any]) -> None:
        self.run, self.config = run, config
        self.id: str | None = None  # the logger run's id, kept in checkpoints so a resumed run continues it
        self.active = False

    def on_fit_start(self, loop: Any) -> None:
        if loop.dist.is_main:
            self.id = self.open(self.id)
            self.active = True

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if self.active:
            self.log(numeric(row), loop.epoch)

    def on_fit_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if self.active:
            self.finish(summary, figures(self.run), None)
            self.active = False

    def on_exception(self, loop: Any, error: BaseException) -> None:
        if self.active:
            self.finish({}, [], error)
            self.active = False

    def state_dict(self) -> dict[str, Any]:
        return {"id": self.id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.id = state.get("id")

    def open(self, resume_id: str | None) -> str | None:
        raise NotImplementedError

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, summary: dict[str, Any], files: list[Path], error: BaseException | None) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **{k: v for k, v in vars(self).items() if k in self.options}}

    name = "logger"
    options: tuple[str, ...] = ()


@LOGGERS.register("tensorboard")
class TensorBoard(Logger):
    """Every numeric entry of each row as a TensorBoard scalar in RUN/tensorboard; the summary as text."""

    name = "tensorboard"

    def __init__(self, run: RunDirectory, config: dict[str, Any]) -> None:
        require("tensorboard", "tensorboard", "loggers[tensorboard]")
        super().__init__(run, config)
        self.writer: Any = None

    def open(self, resume_id: str | None) -> str | None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run.path / "tensorboard"))
        self.writer.add_text("config", "<pre>" + json.dumps(self.config, indent=1, default=str) + "</pre>")
        return None

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, summary: dict[str, Any], files: list[Path], error: BaseException | None) -> None:
        if summary:
            self.writer.add_text("summary", "<pre>" + json.dumps(summary, indent=1, default=str) + "</pre>")
        self.writer.close()


@LOGGERS.register("wandb")
class WandB(Logger):
    """A Weights & Biases run: the config, every row (step = epoch), the summary, the figures as an artefact.
    ``mode``: online, offline (synced later with ``wandb sync``) or disabled; None: W&B's own (WANDB_MODE)."""

    name = "wandb"
    options = ("project", "entity", "mode", "group", "tags", "directory")

    def __init__(self, run: RunDirectory, config: dict[str, Any], project: str = "atlens", entity: str | None = None,
                 mode: str | None = None, group: str | None = None, tags: list[str] | None = None,
                 directory: str | None = None) -> None:
        require("wandb", "wandb", "loggers[wandb]")
        if mode not in (None, "online", "offline", "disabled"):
            raise ValueError(f"mode must be online, offline or disabled, got {mode!r}")
        super().__init__(run, config)
        self.project, self.entity, self.mode, self.group = project, entity, mode, group
        self.tags, self.directory = list(tags or []), directory
        self.handle: Any = None

    def open(self, resume_id: str | None) -> str | None:
        import wandb

        folder = Path(self.directory) if self.directory else self.run.path
        folder.mkdir(parents=True, exist_ok=True)
        self.handle = wandb.init(project=self.project, entity=self.entity, mode=self.mode, group=self.group,
                                 tags=self.tags, dir=str(folder), name=self.run.path.name, config=self.config,
                                 id=resume_id, resume="allow" if resume_id else None,
                                 settings=wandb.Settings(console="off", silent=True))
        return self.handle.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.handle.log(metrics, step=step)

    def finish(self, summary: dict[str, Any], files: list[Path], error: BaseException | None) -> None:
        import wandb

        self.handle.summary.update(summary)
        if files:
            artefact = wandb.Artifact(f"{self.run.path.name}-figures", type="figures")
            for path in files:
                artefact.add_file(str(path), name=path.relative_to(self.run.path).as_posix())
            self.handle.log_artifact(artefact)
        self.handle.finish(exit_code=0 if error is None else 1)


@LOGGERS.register("mlflow")
class MLflow(Logger):
    """An MLflow run in ``experiment``: the config as flat parameters and config.json, every row (step = epoch),
    the summary's numbers as metrics and summary.json, the figures as artefacts. ``tracking_uri``: an MLflow
    server (http://...), a local folder (file:///abs/mlruns; MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE=true) or
    None for MLflow's own (MLFLOW_TRACKING_URI)."""

    name = "mlflow"
    options = ("experiment", "tracking_uri")

    def __init__(self, run: RunDirectory, config: dict[str, Any], experiment: str = "atlens",
                 tracking_uri: str | None = None) -> None:
        require("mlflow", "mlflow", "loggers[mlflow]")
        super().__init__(run, config)
        self.experiment, self.tracking_uri = experiment, tracking_uri
        self.client: Any = None

    def open(self, resume_id: str | None) -> str | None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            if resume_id is not None:
                self.client.update_run(resume_id, status="RUNNING")
                return resume_id
            found = self.client.get_experiment_by_name(self.experiment)
            experiment = found.experiment_id if found else self.client.create_experiment(self.experiment)
            run_id = self.client.create_run(experiment, run_name=self.run.path.name,
                                            tags={"atlens.run": str(self.run.path.resolve())}).info.run_id
        except MlflowException as err:
            raise ConfigError(f"loggers[mlflow]: MLflow refused tracking_uri {self.tracking_uri!r}: "
                              f"{str(err).splitlines()[0]}") from None
        params = [Param(k, str(v)[:500]) for k, v in dotted(self.config).items()]  # MLflow's parameters are flat
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(run_id, params=params[start:start + 100])
        self.client.log_dict(run_id, self.config, "config.json")
        return run_id

    def _metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._metrics(metrics, step)

    def finish(self, summary: dict[str, Any], files: list[Path], error: BaseException | None) -> None:
        if summary:
            self._metrics({f"summary.{k}": v for k, v in numeric(summary).items()}, 0)
            self.client.log_dict(self.id, summary, "summary.json")
        for path in files:
            folder = path.parent.relative_to(self.run.path).as_posix()
            self.client.log_artifact(self.id, str(path), None if folder == "." else folder)
        status = "FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        self.client.set_terminated(self.id, status)
