"""From a config to the parts of a run: the one module that knows every method registry.

``check(cfg)`` validates every component's options and builds the methods without data (the model on
PyTorch's meta device), so ``--dry-run`` and sweep dry runs report every range error before any work.
``build(cfg, device, teachers, run=RUN)`` returns the parts a training loop needs, the run's callbacks (in
phase order) and the metric that selects the best checkpoint; it trains nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import atlens.training.cross_class  # noqa: F401  (registers the cross-class-preserving criterion)
from atlens.attacks import threat_model
from atlens.config import ComponentConfig, RunConfig, as_component, component_value, config_to_dict
from atlens.data import DATASETS, BatchLoader, DatasetInfo, ImageTensors, PreparedData
from atlens.data.sources import check_local_root
from atlens.errors import ConfigError
from atlens.evaluation import PGDAttack
from atlens.evaluation.attacks import ATTACKS
from atlens.hooks import Callback, in_phase_order
from atlens.models import MODELS
from atlens.plots.figure import format_epsilon
from atlens.runs import RunDirectory, run_data
from atlens.seeding import seed_for, seeded
from atlens.training import runtime
from atlens.training.callbacks import (
    CALLBACKS,
    CASTracking,
    Checkpoints,
    Curves,
    Evaluate,
    FGSMAccuracy,
    FinalCAS,
    LossStatistics,
    MetricsFile,
    OverfitWatch,
    Progress,
    Schedule,
    TrainingStats,
)
from atlens.training.criteria import CRITERIA, CrossEntropy
from atlens.training.distributed import global_batchnorm
from atlens.training.early_stop import RULES, EarlyStop, TrainingSignals, UnlabelledSignals, make_rule
from atlens.training.loggers import LOGGERS
from atlens.training.objectives import OBJECTIVES, Objective, TrainAttack
from atlens.training.optimizers import OPTIMIZERS
from atlens.training.samplers import SAMPLERS, extra_stream
from atlens.training.schedules import SCHEDULES, warmed_up
from atlens.training.stopping import signal_named, stop_signals
from atlens.weightspace import AVERAGING, PERTURBATIONS, WeightAveraging, WeightPerturbation

# what check() builds a model for, when no data is loaded: every model option is range-checked by
# its builder, independently of the input shape
_NOMINAL = {"num_classes": 10, "channels": 3, "image_size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3}


@dataclass
class Methods:
    objective: Objective
    criterion: CrossEntropy
    perturbation: WeightPerturbation
    averaging: WeightAveraging

    def describe(self) -> dict[str, Any]:
        return {"objective": self.objective.describe(), "criterion": self.criterion.describe(),
                "perturbation": self.perturbation.describe(), "averaging": self.averaging.describe()}


@dataclass
class Components(Methods):
    cfg: RunConfig
    data: PreparedData
    model: nn.Module
    model_spec: dict[str, Any]
    optimizer: torch.optim.Optimizer
    schedule: Callable[[float], float]  # learning rate at a (fractional, 0-based) epoch
    loader: BatchLoader
    scaler: torch.amp.GradScaler
    precision: runtime.Precision
    device: torch.device
    channels_last: bool
    selection: str  # the row entry that selects the best checkpoint
    callbacks: list[Callback] = field(default_factory=list)  # in phase order; empty without a run directory
    # what a config named in callbacks and loggers, as built (with their sections, for methods.json)
    named: list[tuple[str, ComponentConfig, Callback]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """Every component of the run as methods.json records it: the methods, the optimiser, the schedule, the
        early-stop rule, the extra-data sampler, and the callbacks and loggers the config names."""
        o, record = self.cfg.optim, super().describe()
        record["optimizer"] = OPTIMIZERS.describe(self.optimizer, o, "optim")
        record["schedule"] = SCHEDULES.describe(self.schedule, as_component(o.schedule, "optim.schedule"),
                                                "optim.schedule")
        if o.warmup:
            record["schedule"]["warmup"] = o.warmup
        rule = as_component(self.cfg.early_stop.rule, "early_stop.rule")
        record["early_stop"] = RULES.describe(make_rule(self.cfg.early_stop), rule, "early_stop.rule")
        sampler = self.loader.extra.sampler if self.loader.extra is not None else None
        if sampler is not None:
            record["sampler"] = SAMPLERS.describe(sampler, as_component(self.cfg.extra.sampler, "extra.sampler"),
                                                  "extra.sampler")
        for kind, registry in (("callbacks", CALLBACKS), ("loggers", LOGGERS)):
            record[kind] = [registry.describe(built, section, key) for key, section, built in self.named
                            if key.startswith(kind)]
        return record


def build_methods(cfg: RunConfig, bounds: tuple[float, float] | None = (0.0, 1.0),
                  teachers: dict[str, nn.Module] | None = None) -> Methods:
    """The methods a config composes; they need no data (KD teachers are attached when given)."""
    o = cfg.optim
    return Methods(
        OBJECTIVES.build_from(cfg.objective, "objective", attack=TrainAttack.of(cfg.attack, bounds)),
        CRITERIA.build_from(cfg.criterion, "criterion", teachers=teachers),
        PERTURBATIONS.build_from(cfg.perturbation, "perturbation"),
        AVERAGING.build_from(cfg.averaging, "averaging", epochs=o.epochs, milestones=o.milestones),
    )


# Components a config names by a name or a mapping ({name: ..., option: value}): where, and their registry.
_NAMED = (("optim.schedule", SCHEDULES), ("early_stop.rule", RULES), ("extra.sampler", SAMPLERS))


def _resolved(registry: Any, raw: Any, key: str) -> str | dict[str, Any]:
    """A component given by name or mapping, with its options validated and defaults filled in."""
    section = as_component(raw, key)
    return component_value(ComponentConfig(section.name, registry.validate(section.name, section.options, key)))


def check(cfg: RunConfig) -> RunConfig:
    """Validate every component of ``cfg`` without loading data; returns a copy whose component
    options are complete (defaults filled in), as the run directory records them."""
    cfg = copy.deepcopy(cfg)
    optim_fields = ("name", "epochs", "lr", "schedule", "milestones", "gamma")
    for section, registry in (("data", DATASETS), ("model", MODELS), ("objective", OBJECTIVES),
                              ("criterion", CRITERIA), ("perturbation", PERTURBATIONS), ("averaging", AVERAGING),
                              ("optim", OPTIMIZERS)):
        component = getattr(cfg, section)
        component.options = registry.validate(component.name, component.options, section,
                                               optim_fields if section == "optim" else ())
    for key, registry in _NAMED:
        section, attribute = key.split(".")
        setattr(getattr(cfg, section), attribute, _resolved(registry, getattr(getattr(cfg, section), attribute), key))
    cfg.callbacks = [_resolved(CALLBACKS, raw, f"callbacks[{i}]") for i, raw in enumerate(cfg.callbacks)]
    cfg.loggers = [_resolved(LOGGERS, raw, f"loggers[{i}]") for i, raw in enumerate(cfg.loggers)]
    if cfg.runtime.tensorboard:  # the older switch for the tensorboard logger, recorded once, as a logger
        if "tensorboard" not in cfg.loggers:
            cfg.loggers.append("tensorboard")
        cfg.runtime.tensorboard = False
    build_methods(cfg)
    make_rule(cfg.early_stop)
    _schedule(cfg)
    for i, raw in enumerate(cfg.loggers):  # a missing package stops here, before any data is decoded
        LOGGERS.build_from(as_component(raw, f"loggers[{i}]"), f"loggers[{i}]", run=None, config={})
    if cfg.analysis.cas_attack != "eval":
        try:
            ATTACKS.pgd_steps(cfg.analysis.cas_attack)
        except ConfigError:
            raise ConfigError(f"analysis.cas_attack: expected pgdN (e.g. pgd20) or eval, "
                              f"got {cfg.analysis.cas_attack!r}") from None
    if cfg.eval.val_attack is not None:
        if not cfg.data.val_split:
            raise ConfigError("eval.val_attack scores the validation split, and there is none: set data.val_split "
                              "(e.g. 1024) or remove eval.val_attack")
        try:
            ATTACKS.of_threat(cfg.eval.val_attack, threat_model(base=cfg.attack))
        except ConfigError as err:
            raise ConfigError(f"eval.val_attack: {err}") from None
    try:
        stop_signals(cfg.runtime.stop_signals)
        if cfg.runtime.timeout_signal is not None:
            signal_named(cfg.runtime.timeout_signal, "runtime.timeout_signal")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_local_root(cfg.data.name, cfg.data.root)
    try:
        with torch.device("meta"):
            model = MODELS.build_from(cfg.model, "model", **_NOMINAL)
    except (RuntimeError, NotImplementedError) as err:
        if "meta" not in str(err):
            raise
        model = MODELS.build_from(cfg.model, "model", **_NOMINAL)  # a builder that reads values (timm 1.0.9's ViT)
    OPTIMIZERS.build_from(cfg.optim, "optim", model=model, lr=cfg.optim.lr)
    return cfg


def schedule_notes(cfg: RunConfig) -> list[str]:
    """What a user should hear before a run whose length bends its schedule: milestones that fall on the first
    epoch or on one another (fractions of a short run), a learning rate decayed before the first evaluation."""
    o, notes = cfg.optim, []
    section = as_component(o.schedule, "optim.schedule")
    rate = _schedule(cfg)
    if "milestones" in SCHEDULES.accepted(section.name, {"milestones": None}) and o.milestones:
        epochs = [round(m * o.epochs) for m in o.milestones]
        problems = (["a decay before the first step"] if 0 in epochs else []) + (
            ["two decays on one epoch"] if len(set(epochs)) < len(epochs) else [])
        if problems:
            notes.append(f"optim.milestones {', '.join(f'{m:g}' for m in o.milestones)} of a {o.epochs}-epoch run "
                         f"fall at epochs {', '.join(map(str, epochs))}: {' and '.join(problems)}; milestones "
                         f"for this length (or a longer run) keep the schedule's shape")
    first_evaluation = min(cfg.eval.every, o.epochs)
    decayed = [e for e in range(first_evaluation) if rate(e) < o.lr * (1 - 1e-9)]
    if decayed:
        notes.append(f"the learning rate is {rate(decayed[0]):g} (optim.lr {o.lr:g}) already in epoch "
                     f"{decayed[0] + 1}, before the first evaluation (epoch {first_evaluation}): a short run "
                     f"trains at the decayed rate")
    return notes


def _schedule(cfg: RunConfig) -> Callable[[float], float]:
    o = cfg.optim
    rate = SCHEDULES.build_from(as_component(o.schedule, "optim.schedule"), "optim.schedule", lr=o.lr,
                                epochs=o.epochs, milestones=o.milestones, gamma=o.gamma)
    return warmed_up(rate, o.warmup)


def model_spec(cfg: RunConfig, info: DatasetInfo) -> dict[str, Any]:
    """What a checkpoint records to rebuild the model without the run's config."""
    return {"name": cfg.model.name, "options": cfg.model.options, "num_classes": info.num_classes,
            "channels": info.channels, "image_size": info.image_size, "mean": list(info.mean), "std": list(info.std),
            "classes": info.classes}


def build(cfg: RunConfig, device: torch.device, teachers: dict[str, nn.Module] | None = None,
          rank: int = 0, world: int = 1, data: PreparedData | None = None, run: RunDirectory | None = None,
          extra: Sequence[Callback] = ()) -> Components:
    """Everything a training loop needs for ``cfg`` (validated by ``check``) on ``device`` (rank ``rank`` of
    ``world``); with ``run``, the callbacks that evaluate, track and write into it, ``extra`` (a user's) among
    them in their own phase."""
    data = data if data is not None else run_data(cfg)
    info = data.info
    methods = build_methods(cfg, info.bounds, teachers)  # the threat model's box is the dataset's input range
    spec = model_spec(cfg, info)
    with seeded(seed_for(cfg.seed, "init")):
        model = MODELS.build_from(cfg.model, "model", num_classes=info.num_classes, channels=info.channels,
                                  image_size=info.image_size, mean=info.mean, std=info.std)
    model = model.to(device)
    if world > 1 and cfg.runtime.sync_batchnorm:  # BatchNorm over the global batch, as one process normalises
        model = global_batchnorm(model)
    channels_last = runtime.use_channels_last(cfg.runtime, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for teacher in (teachers or {}).values():
        teacher.to(device)
    o, d = cfg.optim, cfg.data
    optimizer = OPTIMIZERS.build_from(o, "optim", model=model, lr=o.lr)
    schedule = _schedule(cfg)
    augment = d.augment if d.augment is not None else bool(info.crop_padding or info.flip)
    loader = BatchLoader(data.train, d.batch_size, device, shuffle=True,
                         crop_padding=info.crop_padding if augment else 0, flip=info.flip and augment,
                         generator=torch.Generator(), shard=(rank, world),  # reseeded every epoch by the loop
                         drop_last=d.drop_last, extra=extra_stream(cfg, data.extra, info.num_classes),
                         epoch_examples=None if d.epoch == "labelled" else d.epoch)
    if loader.batches_per_pass == 0:
        raise ConfigError(f"data.drop_last: the {len(data.train)} training examples make no full batch of "
                          f"data.batch_size={d.batch_size}; lower data.batch_size or set data.drop_last: false")
    smallest = min(loader.global_size(i) for i in range(min(len(loader), loader.batches_per_pass)))
    if smallest < world:  # a process would get no example of that batch, and its loss would be undefined
        raise ConfigError(f"the smallest batch of an epoch holds {smallest} of the {len(data.train)} training "
                          f"examples, fewer than the {world} processes that split every batch; set "
                          f"data.drop_last: true or choose a data.batch_size that leaves a last batch of at least "
                          f"{world}")
    val = data.val.evaluation_subset(cfg.eval.examples, cfg.seed).decoded() if data.val is not None else None
    parts = Components(**vars(methods), cfg=cfg, data=data, model=model, model_spec=spec, optimizer=optimizer,
                       schedule=schedule, loader=loader, scaler=runtime.grad_scaler(cfg.runtime, device),
                       precision=runtime.Precision.of(cfg.runtime, device, cfg.eval.amp), device=device,
                       channels_last=channels_last,
                       selection=f"{'val' if val is not None else 'test'}_{methods.objective.selects_by}_acc")
    if run is not None:
        config = config_to_dict(cfg)
        provided = {"run": run, "config": config, "classes": info.classes, "epochs": o.epochs, "seed": cfg.seed}
        for kind, registry in (("callbacks", CALLBACKS), ("loggers", LOGGERS)):
            for i, raw in enumerate(getattr(cfg, kind)):
                key = f"{kind}[{i}]"
                section = as_component(raw, key)
                parts.named.append((key, section, registry.build_from(section, key, **provided)))
        # the config's own last within their phase: a logger sees the figures the display phase draws
        parts.callbacks = in_phase_order(_callbacks(parts, run, val, extra) + [cb for _, _, cb in parts.named])
    return parts


def _callbacks(parts: Components, run: RunDirectory, val: ImageTensors | None,
               extra: Sequence[Callback]) -> list[Callback]:
    """The per-epoch work of a run configured by ``parts.cfg``; ``in_phase_order`` sorts it."""
    cfg, info = parts.cfg, parts.data.info
    e, a = cfg.eval, cfg.analysis
    threat = threat_model(bounds=info.bounds, base=cfg.attack)
    attack = PGDAttack(threat, e.steps, e.step_size, e.restarts, random_start=e.random_start)
    cas_attack = attack if a.cas_attack == "eval" else PGDAttack(threat, ATTACKS.pgd_steps(a.cas_attack))
    test = parts.data.test.evaluation_subset(e.examples, cfg.seed).decoded()  # a damaged file stops it here
    if a.cas_every and len(test.labels.unique()) < info.num_classes:
        raise ConfigError(f"eval.examples: CAS tracking (analysis.cas_every) needs every class in the evaluation "
                          f"subset, but {len(test)} examples cover {len(test.labels.unique())} of the "
                          f"{info.num_classes} classes; use at least {info.num_classes} examples")
    val_attack = ATTACKS.of_threat(e.val_attack, threat) if e.val_attack is not None else None
    evaluation = Evaluate(test, val, attack, Schedule(cfg.optim.epochs, (e.every, a.cas_every)), e.batch_size,
                          cfg.seed, val_attack)
    callbacks: list[Callback] = [
        TrainingStats(), LossStatistics(parts.perturbation.loss_threshold), TrainingSignals(info.num_classes),
        parts.perturbation, parts.averaging, evaluation, *extra, MetricsFile(run, parts.selection),
        Checkpoints(run, parts.selection, cfg.checkpoint.every),
        Curves(run, _title(cfg), parts.selection, classes=info.classes),
        Progress(cfg.runtime.progress, e.every)]
    sampler = parts.loader.extra.sampler if parts.loader.extra is not None else None
    # any other component with state or per-epoch work is a callback too (the cross-class criterion and sampler)
    callbacks += [part for part in (parts.objective, parts.criterion, sampler, parts.optimizer, parts.schedule)
                  if isinstance(part, Callback)]
    watch = e.fgsm if e.fgsm is not None else parts.objective.watches_catastrophic_overfitting
    if watch:
        callbacks += [FGSMAccuracy(test, threat, e.batch_size, cfg.seed), OverfitWatch()]
    if a.cas_every:
        tracking = CASTracking(test, cas_attack, info.num_classes, Schedule(cfg.optim.epochs, (a.cas_every,)),
                               e.batch_size, cfg.seed, rides=cas_attack == attack)
        callbacks += [tracking, FinalCAS(test, info.classes, cas_attack, run, e.batch_size, cfg.seed)]
    if parts.data.unlabelled is not None:
        callbacks.append(UnlabelledSignals(parts.data.unlabelled, attack, info.num_classes, e.batch_size, cfg.seed))
    rule = make_rule(cfg.early_stop)
    if rule is not None:
        callbacks.append(EarlyStop(rule, cfg.early_stop.stop, run))
    return callbacks


def _title(cfg: RunConfig) -> str:
    model = cfg.model.name + (f":{cfg.model.options['arch']}" if "arch" in cfg.model.options else "")
    return (f"{cfg.objective.name} · {model} · {cfg.data.name} · "
            f"{cfg.attack.norm} ε = {format_epsilon(cfg.attack.epsilon)}")
