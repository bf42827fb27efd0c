"""From a config to the parts of a run: the one module that knows every method registry.

``check(cfg)`` validates every component's options and builds the methods without data (the model on
PyTorch's meta device), so ``--dry-run`` and sweep dry runs report every range error before any work.
``build(cfg, device, teachers)`` returns the parts a training loop needs; it trains nothing.
``callbacks(...)`` assembles the per-epoch work around them.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import atlens.training.cross_class  # noqa: F401  (registers the cross-class-preserving criterion)
import atlens.training.mart  # noqa: F401  (registers the MART objective)
from atlens.config import RunConfig
from atlens.data import DATASETS, BatchLoader, DatasetInfo, PreparedData
from atlens.errors import ConfigError
from atlens.models import MODELS, prefers_channels_last
from atlens.runs import run_data
from atlens.seeding import seed_for, seeded
from atlens.training import runtime
from atlens.training.criteria import CRITERIA, CrossEntropy
from atlens.training.objectives import OBJECTIVES, Objective, TrainAttack
from atlens.training.schedules import learning_rate
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


def check(cfg: RunConfig) -> RunConfig:
    """Validate every component of ``cfg`` without loading data; returns a copy whose component
    options are complete (defaults filled in), as the run directory records them."""
    cfg = copy.deepcopy(cfg)
    for section, registry in (("data", DATASETS), ("model", MODELS), ("objective", OBJECTIVES),
                              ("criterion", CRITERIA), ("perturbation", PERTURBATIONS), ("averaging", AVERAGING)):
        component = getattr(cfg, section)
        component.options = registry.validate(component.name, component.options, section)
    build_methods(cfg)
    try:
        with torch.device("meta"):
            MODELS.build_from(cfg.model, "model", **_NOMINAL)
    except (RuntimeError, NotImplementedError) as err:
        if "meta" not in str(err):
            raise
        MODELS.build_from(cfg.model, "model", **_NOMINAL)  # a builder that reads values (e.g. timm 1.0.9's ViT)
    return cfg


def model_spec(cfg: RunConfig, info: DatasetInfo) -> dict[str, Any]:
    """What a checkpoint records to rebuild the model without the run's config."""
    return {"name": cfg.model.name, "options": cfg.model.options, "num_classes": info.num_classes,
            "channels": info.channels, "image_size": info.image_size, "mean": list(info.mean), "std": list(info.std),
            "classes": info.classes}


def build(cfg: RunConfig, device: torch.device, teachers: dict[str, nn.Module] | None = None,
          rank: int = 0, world: int = 1, data: PreparedData | None = None) -> Components:
    """Everything a training loop needs for ``cfg`` on ``device`` (rank ``rank`` of ``world``)."""
    build_methods(cfg)  # a bad option fails in a second, before any data is decoded
    data = data if data is not None else run_data(cfg)
    info = data.info
    methods = build_methods(cfg, info.bounds, teachers)  # the threat model's box is the dataset's input range
    spec = model_spec(cfg, info)
    with seeded(seed_for(cfg.seed, "init")):
        model = MODELS.build_from(cfg.model, "model", num_classes=info.num_classes, channels=info.channels,
                                  image_size=info.image_size, mean=info.mean, std=info.std)
    model = model.to(device)
    if world > 1 and cfg.runtime.sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError("runtime.sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); "
                              "on CPU each rank normalises with its own shard's statistics")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = cfg.runtime.channels_last if cfg.runtime.channels_last is not None else prefers_channels_last(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for teacher in (teachers or {}).values():
        teacher.to(device)
    o, d = cfg.optim, cfg.data
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                nesterov=o.nesterov)
    schedule = functools.partial(learning_rate, o.schedule, o.lr, o.epochs, milestones=o.milestones, gamma=o.gamma)
    augment = d.augment if d.augment is not None else bool(info.crop_padding or info.flip)
    loader = BatchLoader(data.train, d.batch_size, device, shuffle=True,
                         crop_padding=info.crop_padding if augment else 0, flip=info.flip and augment,
                         generator=torch.Generator(), shard=(rank, world),  # reseeded every epoch by the loop
                         drop_last=d.drop_last)
    if len(loader) == 0:
        raise ConfigError(f"data.drop_last: the {len(data.train)} training examples make no full batch of "
                          f"data.batch_size={d.batch_size}; lower data.batch_size or set data.drop_last: false")
    return Components(**vars(methods), cfg=cfg, data=data, model=model, model_spec=spec, optimizer=optimizer,
                      schedule=schedule, loader=loader, scaler=runtime.grad_scaler(cfg.runtime, device),
                      precision=runtime.Precision.of(cfg.runtime, device, cfg.eval.amp), device=device,
                      channels_last=channels_last)
