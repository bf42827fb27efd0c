"""One path to a finished run: fresh, resumed or already finished, for the CLI, KD teachers and sweeps."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlens.callback import Callback
from atlens.config import RunConfig, load_config, save_config
from atlens.errors import ConfigError
from atlens.files import write_json
from atlens.runs import RunDirectory, load_checkpoint, load_model
from atlens.training import distributed, runtime
from atlens.training.build import Components, build, build_methods, check
from atlens.training.callbacks import default_callbacks, selection_metric
from atlens.training.loop import Loop
from atlens.training.summary import summarize


def train_to_completion(cfg: RunConfig, out: str | Path, resume: bool = True, callbacks: Sequence[Callback] = (),
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``cfg`` into ``out`` until it is finished and return its summary.

    A finished run is returned as it is; a run with a checkpoint is resumed (with ``resume=False`` an
    existing run is refused instead, so a new run never overwrites one); otherwise a new run starts.
    KD teachers given as ``{config: FILE}`` are trained first under ``out/teachers/<role>``, by the same
    function. ``callbacks`` run after atlens' evaluation and before its writers (metrics, checkpoints)."""
    run = RunDirectory(out)
    status = run.status()
    if status != "new" and not resume:
        raise ConfigError(f"{run.path} already holds a run; resume it with 'atlens train --resume {run.path}' "
                          f"or choose another --out")
    if status == "finished":
        log(f"{run.path} is already complete; its summary:")
        return json.loads(run.summary.read_text())
    cfg = check(cfg)
    device = runtime.select_device(cfg.runtime.device)
    dist = distributed.from_environment(device)
    device = dist.device(device)
    runtime.configure_threads(cfg.runtime.threads)
    teacher_paths, teachers = _teachers(cfg, run, device, log)
    with _main_rank_first(dist):  # rank 0 fills the decoded-image cache, the others then read it
        parts = build(cfg, device, teachers, dist.rank, dist.world)
    all_callbacks = default_callbacks(parts, run, callbacks)
    loop = Loop(parts, all_callbacks, dist, checkpoint_hint=str(run.checkpoints / "last.pt"))
    if status == "partial":
        path = run.checkpoints / "last.pt"
        loop.load_state_dict(load_checkpoint(path, device), str(path))
        if dist.is_main:
            log(f"resuming {run.path} after epoch {loop.epoch}/{cfg.optim.epochs}")
    else:
        dist.barrier()  # every rank has looked at the folder before rank 0 writes into it
        if dist.is_main:
            _start(run, cfg, parts, teacher_paths, selection_metric(all_callbacks))
            log(f"run directory: {run.path}")
    summary = loop.fit()
    if dist.is_main:
        summary = {**summarize(run.read_metrics(), selection_metric(all_callbacks)), **summary}
        write_json(run.summary, summary)
    dist.barrier()
    return summary


def _start(run: RunDirectory, cfg: RunConfig, parts: Components, teachers: dict[str, str], selection: str) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    run.metrics.unlink(missing_ok=True)  # a run that never reached its first checkpoint
    save_config(cfg, run.config)
    methods = parts.describe()
    if teachers:
        methods["criterion"]["teachers"] = teachers
    write_json(run.path / "methods.json", methods)
    data = parts.data
    write_json(run.path / "data.json", {
        "dataset": data.info.name, "classes": data.info.classes, "train_examples": len(data.train),
        "val_examples": len(data.val) if data.val is not None else 0, "test_examples": len(data.test),
        "eval_examples": len(data.test.head(cfg.eval.examples)), "val_indices": data.val_indices,
        "selection": selection})


def _teachers(cfg: RunConfig, run: RunDirectory, device: torch.device,
              log: Callable[[str], None]) -> tuple[dict[str, str], dict[str, nn.Module]]:
    """The criterion's teachers: given as a run directory or a checkpoint, or trained first."""
    criterion = build_methods(cfg).criterion
    paths, models = {}, {}
    for role, spec in criterion.teacher_specs().items():
        if isinstance(spec, str):
            path = Path(spec).expanduser()
            if not path.exists():
                raise ConfigError(f"criterion.{role}_teacher: {path} does not exist (give a run directory, a "
                                  f"checkpoint file, or {{config: FILE}} to train it first)")
        elif isinstance(spec, dict) and "config" in spec and not set(spec) - {"config", "set"}:
            path = run.path / "teachers" / role
            log(f"{role} teacher: {path}")
            train_to_completion(load_config(spec["config"], list(spec.get("set", []))), path, log=log)
        else:
            raise ConfigError(f"criterion.{role}_teacher: expected a path or a mapping with keys config (and set)")
        paths[role] = str(path)
        models[role] = load_model(path, criterion.teacher_checkpoint, device)
    return paths, models


@contextmanager
def _main_rank_first(dist: distributed.Distributed) -> Iterator[None]:
    if not dist.is_main:
        dist.barrier()
    yield
    if dist.is_main:
        dist.barrier()
