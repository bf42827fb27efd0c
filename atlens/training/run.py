"""One path to a finished run: fresh, resumed or already finished, for the CLI, KD teachers and sweeps."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from atlens.config import RunConfig, config_to_dict, dotted, load_config
from atlens.data import PreparedData
from atlens.errors import ConfigError, TrainingInterrupted
from atlens.files import write_json, write_text
from atlens.hooks import Callback
from atlens.runs import RunDirectory, load_checkpoint, load_model, remove_if_only_our_lock, run_data, test_indices
from atlens.runs.history import begin_segment, end_segment, history, how_it_ended
from atlens.training import distributed, runtime
from atlens.training.build import Components, build, check, schedule_notes
from atlens.training.criteria import CRITERIA
from atlens.training.loop import Loop
from atlens.training.pseudo_labels import LABELS, Teacher, open_teacher, pseudo_label, read_labels, write_labels
from atlens.training.samplers import describe_extra
from atlens.training.stopping import StopSignals, stop_signals
from atlens.training.summary import summarize


def train_to_completion(cfg: RunConfig, out: str | Path, resume: bool = True, callbacks: Sequence[Callback] = (),
                        log: Callable[[str], None] = print, overwrite: bool = False,
                        stop: StopSignals | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``out`` until it is finished and return its summary.

    A finished run is returned as it is; a run with a checkpoint is resumed (with ``resume=False`` an
    existing run is refused instead, so a new run never overwrites one); otherwise a new run starts.
    A folder that holds anything but an atlens run is never written into; ``overwrite`` moves whatever
    is at ``out`` aside (to ``out.replaced-<time>``) first, deleting nothing. The run is owned by this
    process while it trains (``RunDirectory.lock``): a second process stops at once.
    KD teachers given as ``{config: FILE}`` are trained first under ``out/teachers/<role>``, by the same
    function. ``callbacks`` run after atlens' evaluation and before its writers (metrics, checkpoints).
    While it trains, ``cfg.runtime.stop_signals`` (or ``stop``) end training at the next step boundary with a
    checkpoint and ``TrainingInterrupted``; calling this again continues from there."""
    run = RunDirectory(out)
    cfg = check(cfg)  # every range error before anything is touched
    if overwrite and run.path.exists():
        log(f"moved the previous {run.path} to {set_aside(run.path)}")
    _refuse_foreign(run, resume)
    if resume and run.exists():
        _refuse_another_config(run, cfg)
    device = runtime.select_device(cfg.runtime.device)
    dist = distributed.from_environment(device)
    device = dist.device(device)
    created = not run.path.exists()
    stop = stop or StopSignals(stop_signals(cfg.runtime.stop_signals))
    try:
        with stop:
            return _train_locked(cfg, run, dist, device, callbacks, log, stop)
    except TrainingInterrupted as interrupted:
        interrupted.run = interrupted.run or run.path  # the run that stopped (a KD teacher's, when one trained)
        interrupted.runtime = cfg.runtime  # the command's settings (the outermost run's) decide on a requeue
        raise
    except BaseException:
        if created and dist.is_main:
            remove_if_only_our_lock(run.path)  # a run that failed at the door leaves no empty folder behind
        raise


def _train_locked(cfg: RunConfig, run: RunDirectory, dist: distributed.Distributed, device: torch.device,
                  callbacks: Sequence[Callback], log: Callable[[str], None], stop: StopSignals) -> dict[str, Any]:
    with run.lock() if dist.is_main else nullcontext():
        status = run.status()
        if status == "finished":
            log(f"{run.path} is already complete; its summary:")
            return json.loads(run.summary.read_text())
        if dist.is_main:
            run.sweep_temporary_files()  # what writes killed in an earlier process left behind
        teacher_paths, teachers = _teachers(cfg, run, device, log, stop)
        extra_teacher = _extra_teacher(cfg, run, device, log, stop)
        runtime.configure_threads(cfg.runtime.threads)  # after the teachers, which set their own
        with _main_rank_first(dist):  # rank 0 fills the decoded-image cache, the others then read it
            data = run_data(cfg)
        pseudo = _pseudo_labels(cfg, run, data, extra_teacher, device, log, dist)
        if pseudo is not None:
            data.extra = data.extra.with_labels(pseudo[0])
        parts = build(cfg, device, teachers, dist.rank, dist.world, data=data, run=run, extra=callbacks)
        loop = Loop(parts, dist=dist, checkpoint_hint=str(run.checkpoints / "last.pt"), stop=stop)
        if status == "partial":
            path = run.resume_checkpoint()
            problems = loop.load_state_dict(load_checkpoint(path, device), str(path))
            if dist.is_main:
                for problem in problems:
                    log(f"warning: {problem}")
                where = f", {loop.position}/{loop.batches} steps into epoch {loop.epoch + 1}" if loop.position else ""
                log(f"resuming {run.path} after epoch {loop.epoch}/{cfg.optim.epochs}{where}")
        else:
            dist.barrier()  # every rank has looked at the folder before rank 0 writes into it
            if dist.is_main:
                _start(run, cfg, parts, teacher_paths, parts.selection, pseudo)
                log(f"run directory: {run.path}")
        if dist.is_main and parts.precision.note:
            log(f"note: {parts.precision.note}")
        if dist.is_main and status != "partial":
            for note in schedule_notes(cfg):
                log(f"note: {note}")
        if dist.is_main and parts.loader.last_batch < cfg.data.batch_size // 4:
            log(f"note: the {len(parts.data.train)} training examples leave a last batch of "
                f"{parts.loader.last_batch} in every epoch (data.batch_size={cfg.data.batch_size}); its BatchNorm "
                f"statistics make that step much noisier than the others: data.drop_last: true skips it")
        segment = begin_segment(run.path, loop.epoch, runtime.machine(device), dist.world) if dist.is_main else None
        try:
            summary = loop.fit()
        except BaseException as error:
            if segment is not None:
                end_segment(run.path, segment, loop.epoch, how_it_ended(error),
                            getattr(error, "signal_name", None))
            raise
        if dist.is_main:
            segments = end_segment(run.path, segment, loop.epoch, how_it_ended(None))
            summary = {**summarize(run.read_metrics(), parts.selection), **summary,
                       "machine": runtime.machine(device), "history": history(segments)}
            if data.extra is not None:
                summary["extra"] = describe_extra(cfg, data.extra, pseudo[1] if pseudo else None)
            write_json(run.summary, summary)
        dist.barrier()
    return summary


def set_aside(path: Path) -> Path:
    """Move ``path`` to a free ``path.replaced-<time>`` beside it (never deleting anything)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    with RunDirectory(path).lock():  # not while another process owns it
        pass
    path.rename(target)
    return target


# how a process runs, not what it computes: a continued run may use other values
PROCESS_SETTINGS = ("runtime.threads", "runtime.progress", "runtime.stop_signals", "runtime.timeout_signal",
                    "runtime.max_timeouts")


def config_differences(saved: RunConfig, given: RunConfig) -> list[str]:
    """The settings (dotted keys) in which ``given`` differs from the run's ``saved`` config, each with both
    values; settings of the process alone (``PROCESS_SETTINGS``) are not compared."""
    before, now = dotted(config_to_dict(saved)), dotted(config_to_dict(given))
    missing = object()
    return [f"{key} ({now.get(key, 'unset')!s} here, {before.get(key, 'unset')!s} in the run)"
            for key in sorted(before.keys() | now.keys())
            if key not in PROCESS_SETTINGS and before.get(key, missing) != now.get(key, missing)]


def _refuse_another_config(run: RunDirectory, cfg: RunConfig) -> None:
    """The same command continues a run; a command with another config is refused, naming what differs."""
    differences = config_differences(check(load_config(run.config)), cfg)
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise ConfigError(f"{run.path} holds a run of another config: {shown}. Continue it as it was with "
                          f"'atlens train --resume {run.path}', choose another --out, or --overwrite to move it aside")


def _refuse_foreign(run: RunDirectory, resume: bool) -> None:
    """Never write into a folder that holds something other than an atlens run, nor, for a new run,
    into an existing run."""
    if not run.path.exists():
        return
    if not run.path.is_dir():
        raise ConfigError(f"{run.path} is a file, not a run directory; choose another --out")
    ours = {".lock", ".owner.json"}
    # an atomic write in progress (.NAME.*.tmp) is another atlens process starting this run: not foreign content
    content = sorted(p.name for p in run.path.iterdir()
                     if p.name not in ours and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if not content:
        return
    if not run.exists():
        shown = ", ".join(content[:3]) + (f" and {len(content) - 3} more" if len(content) > 3 else "")
        raise ConfigError(f"{run.path} is not empty and is not an atlens run (it holds {shown}); choose another "
                          f"--out, or --overwrite to move it aside")
    if not resume:
        state = {"finished": "finished", "partial": "interrupted", "new": "started, no checkpoint yet"}[run.status()]
        raise ConfigError(f"{run.path} already holds a run ({state}); resume it with "
                          f"'atlens train --resume {run.path}', choose another --out, or --overwrite to move it aside")


def _start(run: RunDirectory, cfg: RunConfig, parts: Components, teachers: dict[str, str], selection: str,
           pseudo: tuple[torch.Tensor, dict[str, Any]] | None = None) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    run.metrics.unlink(missing_ok=True)  # a run that never reached its first checkpoint
    if pseudo is not None:  # computed once: a resumed run reads them back
        labels, teacher = pseudo
        write_labels(run.path, labels, teacher)
    write_text(run.config, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    methods = parts.describe()
    if teachers:
        methods["criterion"]["teachers"] = teachers
    methods["extra"] = describe_extra(cfg, parts.data.extra, pseudo[1] if pseudo else None)
    write_json(run.path / "methods.json", methods)
    data = parts.data
    write_json(run.path / "data.json", {
        "dataset": data.info.name, "classes": data.info.classes, "train_examples": len(data.train),
        "val_examples": len(data.val) if data.val is not None else 0, "test_examples": len(data.test),
        "eval_examples": len(data.test.balanced(cfg.eval.examples)),
        "eval_indices": test_indices(cfg, data.test, cfg.eval.examples),
        "val_indices": data.val_indices,
        "extra_examples": len(data.extra) if data.extra is not None else 0,
        "selection": selection})


def _teacher_path(spec: Any, key: str, folder: Path, log: Callable[[str], None],
                  stop: StopSignals | None = None) -> Path:
    """A teacher given as a run directory or a checkpoint, or as ``{config: FILE, set: [...]}`` trained first
    into ``folder`` by the same function (leaving the process's threads as it found them)."""
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if not path.exists():
            raise ConfigError(f"{key}: {path} does not exist (give a run directory, a checkpoint file, or "
                              f"{{config: FILE}} to train it first)")
        return path
    if isinstance(spec, dict) and "config" in spec and not set(spec) - {"config", "set"}:
        log(f"{key}: {folder}")
        threads = torch.get_num_threads()
        try:  # a teacher leaves the process as it found it (its runtime.threads is its own)
            train_to_completion(load_config(spec["config"], list(spec.get("set", []))), folder, log=log, stop=stop)
        finally:
            torch.set_num_threads(threads)
        return folder
    raise ConfigError(f"{key}: expected a path or a mapping with keys config (and set)")


def _teachers(cfg: RunConfig, run: RunDirectory, device: torch.device, log: Callable[[str], None],
              stop: StopSignals) -> tuple[dict[str, str], dict[str, nn.Module]]:
    """The criterion's teachers: given as a run directory or a checkpoint, or trained first."""
    criterion = CRITERIA.build_from(cfg.criterion, "criterion")
    paths, models = {}, {}
    for role, spec in criterion.teacher_specs().items():
        path = _teacher_path(spec, f"criterion.{role}_teacher", run.path / "teachers" / role, log, stop)
        paths[role] = str(path)
        models[role] = load_model(path, criterion.teacher_checkpoint, device)
    return paths, models


def _extra_teacher(cfg: RunConfig, run: RunDirectory, device: torch.device, log: Callable[[str], None],
                   stop: StopSignals) -> Teacher | None:
    """What pseudo-labels the extra data (None unless extra.labels is pseudo and the run has no labels yet)."""
    if cfg.extra.source is None or cfg.extra.labels != "pseudo" or (run.path / LABELS).is_file():
        return None
    path = _teacher_path(cfg.extra.teacher, "extra.teacher", run.path / "teachers" / "extra", log, stop)
    return open_teacher(path, cfg.extra.teacher_checkpoint, device)


def _pseudo_labels(cfg: RunConfig, run: RunDirectory, data: PreparedData, teacher: Teacher | None,
                   device: torch.device, log: Callable[[str], None],
                   dist: distributed.Distributed) -> tuple[torch.Tensor, dict[str, Any]] | None:
    """The extra data's pseudo-labels and their record: read back from the run when it has them, otherwise from
    the teacher (and written with the run's first files)."""
    if data.extra is None or cfg.extra.labels != "pseudo":
        return None
    stored = read_labels(run.path)
    if stored is not None:
        if len(stored[0]) != len(data.extra):
            raise ConfigError(f"{run.path / LABELS} holds {len(stored[0])} labels but extra.source gives "
                              f"{len(data.extra)} examples; the extra data changed since the run started")
        return stored
    assert teacher is not None
    return pseudo_label(teacher, data.extra, data.info.num_classes, device, log if dist.is_main else lambda m: None,
                        show_progress=dist.is_main, shard=(dist.rank, dist.world), total=dist.sum)


def label_extra(cfg: RunConfig, out: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Pseudo-label ``cfg``'s extra data with its ``extra.teacher`` once, into ``out`` (extra-labels.npy and
    extra-labels.json), and return the record. Runs given ``extra.teacher: out`` reuse these labels; a teacher
    given as ``{config: FILE}`` is trained first into ``out/teacher`` (resumed if interrupted)."""
    cfg = check(cfg)
    if cfg.extra.source is None or cfg.extra.labels != "pseudo":
        raise ConfigError("atlens label: the config needs extra.source and extra.labels: pseudo with extra.teacher "
                          "(e.g. --set extra.source=rest --set extra.labels=pseudo --set extra.teacher=RUN)")
    folder = Path(out)
    if folder.is_file() or (folder / LABELS).exists():
        raise ConfigError(f"{folder} already holds pseudo-labels (or is a file); choose another --out")
    device = runtime.select_device(cfg.runtime.device)
    runtime.configure_threads(cfg.runtime.threads)
    teacher = open_teacher(_teacher_path(cfg.extra.teacher, "extra.teacher", folder / "teacher", log),
                           cfg.extra.teacher_checkpoint, device)
    data = run_data(cfg)
    if data.extra is None:
        raise ConfigError("atlens label: the config gives no extra data")
    labels, record = pseudo_label(teacher, data.extra, data.info.num_classes, device, log)
    folder.mkdir(parents=True, exist_ok=True)
    write_labels(folder, labels, record)
    return record


@contextmanager
def _main_rank_first(dist: distributed.Distributed) -> Iterator[None]:
    if not dist.is_main:
        dist.barrier()
    yield
    if dist.is_main:
        dist.barrier()
