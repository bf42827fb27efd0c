"""Pseudo-labels of the extra data (``extra.labels: pseudo``).

A standard teacher predicts the class of every clean extra image once; the labels are stored as
``extra-labels.npy`` with the teacher's identity in ``extra-labels.json`` (path, checkpoint, epoch, SHA-256,
class counts, a digest of the extra data, and for ``source: rest`` the agreement with the true labels).
A folder that holds them — a run that pseudo-labelled the same extra data, or what ``atlens label`` wrote —
serves as ``extra.teacher`` of further runs, which then reuse the labels without the teacher's checkpoint:
runs that differ in anything else (the sampler, the objective, the seed of training) train on the same
labels, as Carmon et al.'s release ships its pseudo-labels with the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from atlens.data.extra import ExtraData, predict_labels
from atlens.errors import ConfigError
from atlens.files import atomic_write, write_json
from atlens.progress import progress
from atlens.runs import RunDirectory, load_model_and_epoch

LABELS, RECORD = "extra-labels.npy", "extra-labels.json"


@dataclass
class Teacher:
    """Where pseudo-labels come from: a standard model to ask, or the labels a folder already holds."""

    record: dict[str, Any]
    model: nn.Module | None = None
    labels: torch.Tensor | None = None


def read_labels(folder: Path) -> tuple[torch.Tensor, dict[str, Any]] | None:
    """The pseudo-labels stored in ``folder`` and their record (None when it holds none)."""
    if not (folder / LABELS).is_file():
        return None
    labels = torch.from_numpy(np.load(folder / LABELS, allow_pickle=False)).long()
    return labels, json.loads((folder / RECORD).read_text())


def write_labels(folder: Path, labels: torch.Tensor, record: dict[str, Any]) -> None:
    atomic_write(folder / LABELS, lambda handle: np.save(handle, labels.numpy()))
    write_json(folder / RECORD, record)


def open_teacher(path: Path, checkpoint: str, device: torch.device) -> Teacher:
    """A folder with stored pseudo-labels gives those; a run directory or a checkpoint gives its model."""
    stored = read_labels(path) if path.is_dir() else None
    if stored is not None:
        labels, record = stored
        return Teacher({**record, "reused_from": str(path)}, labels=labels)
    model, epoch = load_model_and_epoch(path, checkpoint, device)
    file = path if path.is_file() else RunDirectory(path).checkpoint_path(checkpoint)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return Teacher({"path": str(path), "checkpoint": str(file), "epoch": epoch, "sha256": digest}, model=model)


def pseudo_label(teacher: Teacher, extra: ExtraData, num_classes: int, device: torch.device,
                 log: Callable[[str], None] = print, show_progress: bool = True,
                 shard: tuple[int, int] = (0, 1),
                 total: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The extra data's pseudo-labels and their record: the teacher's predictions, or its stored labels after
    checking that they belong to this extra data (the same examples, by their digest). Under data parallelism,
    each rank predicts its ``shard`` (rank, world size) of the batches and ``total`` (a sum over the ranks, in
    place) gives every rank all of them: each image is labelled once."""
    digest = extra.digest()
    if teacher.labels is not None:
        record = teacher.record
        if len(teacher.labels) != len(extra) or record.get("extra_digest") != digest:
            raise ConfigError(
                f"extra.teacher {record['reused_from']} holds pseudo-labels of other extra data ({len(teacher.labels)} "
                f"examples) than this run's ({len(extra)} from {extra.source}; extra.take and the seed choose them); "
                f"give the teacher's run directory or checkpoint to label these anew")
        log(f"pseudo-labels of the {len(extra)} extra examples from {record['reused_from']}")
        return teacher.labels, record
    assert teacher.model is not None
    log(f"pseudo-labelling {len(extra)} extra examples with {teacher.record['checkpoint']}")
    bar = (lambda batches: progress(batches, "pseudo-labelling", unit="batch")) if show_progress else None
    labels = predict_labels(teacher.model, extra, device, progress=bar, shard=shard)
    if total is not None:
        labels = total(labels)
    record = {**teacher.record, "examples": len(labels), "extra_digest": digest,
              "class_counts": torch.bincount(labels, minlength=num_classes).tolist()}
    if extra.true_labels is not None:  # the extra data's own labels are known (source: rest)
        record["agreement_with_true_labels"] = float((labels == extra.true_labels).double().mean())
    return labels, record
