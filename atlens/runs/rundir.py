"""The run directory: config.yaml, metrics.jsonl, summary.json, curves.png, checkpoints/, analysis/."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from atlens.config import RunConfig, parse_yaml
from atlens.data import DatasetInfo, ImageTensors, PreparedData, prepare_data
from atlens.errors import CheckpointError, ConfigError
from atlens.files import write_text
from atlens.models import build_model, prefers_channels_last
from atlens.plugins import import_modules
from atlens.runs.checkpoint import WEIGHTS_FORMATS, load_checkpoint, load_weights
from atlens.runs.lock import run_lock

# what a run stopped by a signal inside an epoch resumes from (last.pt stays the end of the last finished epoch)
INTERRUPTED = "interrupted.pt"


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    curves = property(lambda self: self.path / "curves.png")
    checkpoints = property(lambda self: self.path / "checkpoints")
    analysis = property(lambda self: self.path / "analysis")

    def lock(self) -> AbstractContextManager[None]:
        """Ownership of this run for the block (see ``atlens.runs.lock``)."""
        return run_lock(self.path)

    def exists(self) -> bool:
        return self.config.is_file()

    def status(self) -> str:
        """``finished`` (summary written), ``partial`` (a checkpoint to resume from) or ``new``."""
        if self.summary.is_file():
            return "finished"
        if self.resume_checkpoint() is not None:
            return "partial"
        return "new"

    def resume_checkpoint(self) -> Path | None:
        """What an unfinished run resumes from: interrupted.pt (written when a signal stopped it inside an epoch,
        removed once last.pt is newer) or last.pt; None before the first checkpoint."""
        for name in (INTERRUPTED, "last.pt"):
            if (self.checkpoints / name).is_file():
                return self.checkpoints / name
        return None

    def read_summary(self) -> dict[str, Any]:
        """The finished run's summary (best and last accuracies, CAS, selected epoch)."""
        if not self.summary.is_file():
            raise CheckpointError(f"{self.path} has no summary.json: the run has not finished")
        return json.loads(self.summary.read_text())

    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """The epochs' rows. A torn last line (the process was killed while writing it) is left out: that
        epoch has no checkpoint yet, and resuming rewrites it."""
        if not self.metrics.is_file():
            return []
        lines = [line for line in self.metrics.read_text(errors="replace").splitlines() if line.strip()]
        rows = []
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    break
                raise CheckpointError(f"{self.metrics}, line {number}, is not a JSON row: the file was edited "
                                      f"or damaged") from None
            if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                rows.append(row)
        return rows

    def truncate_metrics(self, last_epoch: int) -> None:
        """Keep the rows up to ``last_epoch`` (the checkpoint a resume starts from), each epoch once."""
        rows = {}
        for row in self.read_metrics():
            if row["epoch"] <= last_epoch:
                rows.setdefault(row["epoch"], row)
        write_text(self.metrics, "".join(json.dumps(rows[e]) + "\n" for e in sorted(rows)))

    def sweep_temporary_files(self) -> list[Path]:
        """Remove what killed atomic writes left behind (``.NAME.*.tmp``); returns what was removed."""
        removed = []
        for folder in (self.path, self.checkpoints, self.analysis):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed

    def checkpoint_path(self, name: str) -> Path:
        """``best``, ``last``, ``epoch-N`` or a path to a checkpoint file."""
        if name in ("best", "last", "interrupted") or name.startswith("epoch-"):
            path = self.checkpoints / f"{name}.pt"
        else:
            path = Path(name)
        if not path.is_file():
            available = sorted(p.stem for p in self.checkpoints.glob("*.pt")) if self.checkpoints.is_dir() else []
            raise CheckpointError(
                f"no checkpoint {name!r} in {self.path}; available: {', '.join(available) or 'none'} "
                f"(or give a path to a .pt file)"
            )
        return path

    def checkpoint_label(self, name: str) -> str:
        """How results name a checkpoint: ``best``, ``last``, ``epoch-N``; a file by its stem when it is one of
        this run's checkpoints, else ``file-<stem>`` (a ``best.pt`` from elsewhere is not this run's best)."""
        if not name.endswith(".pt"):
            return name
        path = Path(name)
        inside = path.resolve().parent == self.checkpoints.resolve()
        return path.stem if inside else f"file-{path.stem}"


def run_data(cfg: RunConfig) -> PreparedData:
    """The splits a run was trained and evaluated on (same subset, validation split and label noise)."""
    d = cfg.data
    return prepare_data(
        d.name, d.root, d.download, val_split=d.val_split, per_class=d.per_class, seed=cfg.seed, options=d.options,
        label_noise=d.label_noise, per_class_start=d.per_class_start, unlabelled=d.unlabelled,
        extra=cfg.extra.source, extra_take=cfg.extra.take,
    )


class TestSubset(NamedTuple):
    data: ImageTensors
    info: DatasetInfo
    indices: list[int] | None  # which test examples (None: all of them)


def run_test_data(cfg: RunConfig, examples: int | None = None) -> TestSubset:
    """``examples`` of a run's test split, every class as equally represented as possible (all by default;
    seeded by the run's seed, as the per-epoch evaluation draws them), its dataset and which examples."""
    data = run_data(cfg)
    indices = test_indices(cfg, data.test, examples)
    subset = data.test if indices is None else data.test.subset(torch.tensor(indices))
    return TestSubset(subset, data.info, indices)


def test_indices(cfg: RunConfig, test: ImageTensors, examples: int | None) -> list[int] | None:
    """Which test examples ``run_test_data`` and the per-epoch evaluation use (None: all of them)."""
    indices = test.evaluation_indices(examples, cfg.seed)
    return None if indices is None else indices.tolist()


def import_run_modules(run: RunDirectory) -> None:
    """The modules a run's config lists under ``imports``, imported (what ``--resume`` imports too)."""
    raw = parse_yaml(run.config.read_text(), str(run.config))
    if isinstance(raw, dict) and raw.get("imports"):
        import_modules(raw["imports"], f"{run.config}: imports")


def model_from_checkpoint(state: dict[str, Any], source: str) -> nn.Module:
    spec = state.get("model_spec")
    keys = ("name", "num_classes", "channels", "image_size", "mean", "std")
    if not isinstance(spec, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{source} has no model_spec or weights; it was not written by atlens")
    missing = [k for k in keys if k not in spec]
    if missing:
        raise CheckpointError(f"{source}: its model_spec lacks {', '.join(missing)}; it was edited or not written "
                              f"by atlens")
    try:
        model = build_model(spec["name"], spec["num_classes"], spec["channels"], spec["image_size"],
                            spec["mean"], spec["std"], spec.get("options", {}))
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: its model_spec does not describe a model atlens can build: {err}") from None
    load_weights(model, state["model"], source)
    return model


def load_model(run: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu",
               data: DatasetInfo | None = None) -> nn.Module:
    """A trained model in eval mode, from a run directory (``best``, ``last``, ``epoch-N``) or a
    checkpoint file path; with ``data``, refused unless it takes the data's images and classes."""
    return load_model_and_epoch(run, checkpoint, device, data)[0]


def check_fits(state: dict[str, Any], data: DatasetInfo, path: Path, run: Path) -> None:
    """One line when a checkpoint's model does not take ``data``'s images or predict its classes (a checkpoint
    of another run given with --checkpoint): both shapes, and what to give instead."""
    spec = state.get("model_spec") if isinstance(state, dict) else None
    if not isinstance(spec, dict) or not all(k in spec for k in ("channels", "image_size", "num_classes")):
        return  # model_from_checkpoint names what is missing
    def shape(channels: int, size: int, classes: int) -> str:
        return f"{channels}×{size}×{size} images, {classes} classes"

    theirs = shape(spec["channels"], spec["image_size"], spec["num_classes"])
    ours = shape(data.channels, data.image_size, data.num_classes)
    if theirs != ours:
        raise CheckpointError(f"{path} holds a model for {theirs}, but {run}'s data are {ours}; give a checkpoint "
                              f"of this run (best, last, epoch-N) or of a run on the same data")


def load_model_and_epoch(run: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu",
                         data: DatasetInfo | None = None) -> tuple[nn.Module, int | None]:
    """``load_model`` plus the epoch the checkpoint was written after. A run directory's config names the modules
    its model may come from (``imports``): they are imported first; a checkpoint file names none (its model of
    one's own needs its module imported by the caller)."""
    run_path = Path(run)
    if run_path.is_dir() and RunDirectory(run_path).config.is_file():
        import_run_modules(RunDirectory(run_path))
    path = run_path if run_path.is_file() else RunDirectory(run_path).checkpoint_path(checkpoint)
    state = load_checkpoint(path, map_location=device, formats=WEIGHTS_FORMATS)
    if data is not None:
        check_fits(state, data, path, run_path)
    model = model_from_checkpoint(state, str(path)).to(device)
    if prefers_channels_last(model):
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), state.get("epoch")


def distinct_checkpoints(models: dict[str, tuple[Any, int | None]], note: Callable[[str], None] | None = None
                         ) -> dict[str, tuple[Any, int | None]]:
    """``models`` (name -> (model, epoch)) without ``last`` when it was written at the epoch ``best`` was (the best
    epoch was the last): attacking the same weights twice would only draw an all-zero difference."""
    best, last = models.get("best"), models.get("last")
    if best is None or last is None or best[1] is None or best[1] != last[1]:
        return models
    if note:
        note(f"best and last are the same checkpoint (epoch {best[1]}): computed once, as best")
    return {name: value for name, value in models.items() if name != "last"}
