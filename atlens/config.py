"""Run configuration: YAML in, validated dataclasses out, resolved YAML saved with every run.

Sections with a ``name`` (data, model, objective) choose a registered component; their other keys
are that component's options and are validated against its builder (see ``atlens.registry``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from atlens.errors import ConfigError
from atlens.plugins import import_modules

# Enumerations, named once: the schema checks them and the code that implements them imports them.
Norm = Literal["linf", "l2"]
BatchNormMode = Literal["train", "eval", "frozen"]


def parse_number(value: Any) -> Any:
    """Accept ``"8/255"`` style fractions where a number is expected (researchers write ε that way)."""
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            return value
    return value


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(map(str, typing.get_args(annotation)))
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise a ConfigError naming ``key``."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value in choices and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected {' or '.join(map(str, choices))}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        errors = []
        for arg in candidates:
            try:
                return coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        if len(candidates) == 1:
            raise ConfigError(errors[0] + (" (or null)" if type(None) in args else ""))
        names = " or ".join(_type_name(a) for a in candidates)
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        return [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        value = parse_number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number (e.g. 0.031 or 8/255), got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {value!r}")
    return value



@dataclass
class DataConfig:
    name: str = "cifar10"
    root: str | None = None
    download: bool = False
    val_split: float = 0.0  # a fraction in (0, 1) or a count >= 1, held out of the training split
    per_class: int | None = None  # train on N examples of each class (the first, or from per_class_start)
    per_class_start: int = 0  # skip this many examples of each class: disjoint training subsets of one dataset
    # inputs of the training split outside the training subset, labels dropped: the unlabelled_* early-warning
    # signals (atlens.training.early_stop) are computed on them at every evaluation
    unlabelled: int = 0
    label_noise: float = 0.0  # fraction of training labels replaced by a different random class (seeded)
    augment: bool | None = None  # None: the dataset's default augmentation
    batch_size: int = 128
    # skip each epoch's last, smaller batch (which examples miss out changes with the shuffle): a batch of a
    # few examples gives BatchNorm statistics, and so that SGD step, far more noise than the others
    drop_last: bool = False
    # what an epoch is: one pass over the labelled set ("labelled"), or N examples: ceil(N / batch_size) batches
    # (mixed batches with extra data) from successive permutations of the labelled set, a fresh one each epoch
    # and whenever one runs out, cut off where the epoch ends (the semi-supervised references: 50000)
    epoch: Literal["labelled"] | int = "labelled"
    options: dict = field(default_factory=dict)


ExtraLabels = Literal["provided", "pseudo"]


@dataclass
class ExtraConfig:
    """Extra training data beside the labelled set (atlens.data.extra): generated images with their labels, or
    unlabelled images pseudo-labelled by a standard teacher (robust self-training)."""

    # a .npz (arrays image [N, H, W, C] uint8 and optionally label), a .npy of images (memory-mapped; labels in
    # <name>.labels.npy beside it), an imagefolder tree <class>/<image>, or "rest": the training split outside
    # the training subset (for studies); None: no extra data
    source: str | None = None
    labels: ExtraLabels = "provided"  # provided (with the source), or pseudo: the teacher's predictions
    teacher: Any = None  # for pseudo labels: a run directory, a checkpoint, or {config: FILE, set: [...]}
    teacher_checkpoint: str = "best"
    fraction: float = 0.5  # the share of every training batch drawn from the extra data (Carmon 0.5, DM-AT 0.7)
    take: int | None = None  # use a seeded subset of this many extra examples
    sampler: Any = "uniform"  # uniform, or cross_class (a name, or {name: ..., option: value})


@dataclass
class AttackConfig:
    """The training threat model; evaluation and analyses default to the same ε and norm."""

    norm: Norm = "linf"
    epsilon: float = 8 / 255
    step_size: float | None = None  # None: ε/4 (L∞) or ε/8 (L2)
    steps: int = 10
    random_start: bool = True
    # BatchNorm mode while crafting training examples (atlens.attacks.pgd.crafting_mode: eval, train, or frozen =
    # batch statistics without updating the running ones); None: the objective's reference setting (train for
    # PGD-AT and fast AT, eval for TRADES and MART)
    bn_mode: BatchNormMode | None = None


@dataclass
class ComponentConfig:
    """A registered component chosen by ``name``; its other keys are the component's options."""

    name: str
    options: dict = field(default_factory=dict)


def _component(name: str):
    return field(default_factory=lambda: ComponentConfig(name))


def as_component(raw: Any, key: str) -> ComponentConfig:
    """A component given by name (``uniform``) or as a mapping with a name and options (``{name: cross_class,
    every: 3}``): how ``extra.sampler``, ``optim.schedule``, ``early_stop.rule`` and the entries of ``callbacks``
    and ``loggers`` name theirs."""
    if isinstance(raw, ComponentConfig):
        return raw
    if isinstance(raw, str):
        return ComponentConfig(raw)
    if isinstance(raw, dict):
        options = dict(raw)
        name = options.pop("name", None)
        if isinstance(name, str):
            return ComponentConfig(name, options)
    raise ConfigError(f"{key}: expected a name or a mapping with a name and options, got {raw!r}")


def component_value(component: ComponentConfig) -> str | dict[str, Any]:
    """How the resolved config writes a component given by name or mapping: its name alone when it has no
    options, else the mapping."""
    return {"name": component.name, **component.options} if component.options else component.name


@dataclass
class OptimConfig:
    """The optimiser (``name``, a registered optimiser; its other keys are its options, e.g. SGD's momentum,
    weight_decay, nesterov, no_decay) and the learning-rate schedule."""

    name: str = "sgd"  # sgd, adamw (atlens.training.optimizers)
    epochs: int = 200
    lr: float = 0.1
    # piecewise, cosine, one_cycle or constant (atlens.training.schedules): a name, or {name: ..., option: value}
    schedule: Any = "piecewise"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of the run
    gamma: float = 0.1
    # epochs of linear warm-up before the schedule: the rate is the schedule's times min(1, t / warmup), t the
    # training progress in epochs (0 at the first step)
    warmup: float = 0.0
    options: dict = field(default_factory=dict)


@dataclass
class EvalConfig:
    steps: int = 20
    step_size: float | None = None  # None: same rule as training (ε/4 L∞, ε/8 L2)
    restarts: int = 1
    examples: int | None = None  # evaluate on the first N test (and validation) examples
    every: int = 1
    batch_size: int = 256
    # test FGSM accuracy too (catastrophic-overfitting watch); None: only for fast_at
    fgsm: bool | None = None
    random_start: bool = True  # PGD starts from a uniform point in the ball (False: from x)
    # the attack that scores the validation split, and so selects the best checkpoint when there is one (fgsm,
    # pgdN, cwN; e.g. cw40, Wang et al.'s PGD-40 on the CW margin); None: the PGD above
    val_attack: str | None = None
    # precision the per-epoch evaluation crafts its attacks in: false (fp32), bf16 (= true) or bf16-emulated;
    # the attacked examples are judged in fp32 either way
    amp: bool | str = False


@dataclass
class CheckpointConfig:
    every: int = 0  # also keep epoch-N checkpoints every N epochs (0: only best and last)


@dataclass
class AnalysisConfig:
    # CAS on the evaluation subset every N epochs, with the evaluation attack (PGD-20 at the training
    # ε by default), recorded as `cas` in metrics.jsonl; best/last matrices are written at the end
    cas_every: int = 0
    # the attack whose examples CAS attributes: pgdN at the training threat model (the CAS paper: PGD-20),
    # or "eval" to ride on the per-epoch evaluation's own attack (one pass instead of two)
    cas_attack: str = "pgd20"


@dataclass
class EarlyStopConfig:
    # the rule that keeps checkpoints/selected.pt (atlens.training.early_stop): none (the signals small_loss_share and
    # train_cas are logged in every run regardless), small_loss, cas_trend, val (needs data.val_split), unlabelled
    # (needs data.unlabelled) or a registered rule of your own (a name, or {name: ..., option: value})
    rule: Any = "none"
    stop: bool = False  # also end training once the rule declares robust overfitting
    small_loss_limit: float = 0.2  # small_loss: robust overfitting once this share of training losses is < 0.5
    cas_window: int = 5  # cas_trend: moving average of train_cas over this many epochs
    cas_drop: float = 0.1  # cas_trend: ... falling this fraction below its peak
    patience: int = 5  # cas_trend: consulted epochs below the drop; val, unlabelled: evaluations without improvement


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    threads: int | None = None  # CPU threads (None: every core)
    channels_last: bool | None = None  # None: on for convolutional models
    # mixed precision of the training step: false (fp32), bf16 (= true; CUDA, and CPUs with native bf16 — others
    # say so and run fp32), fp16 (CUDA, with loss scaling) or bf16-emulated (bf16 on any CPU; slow, for numerics)
    amp: bool | str = False
    progress: bool = True
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over the global batch
    tensorboard: bool = False  # also log every epoch's metrics to RUN/tensorboard (needs the tensorboard package)
    # signals that end training at the next step with a checkpoint the same command resumes from (a submitit job's
    # pre-emption signal is added); SLURM sends SIGTERM on pre-emption and scancel, --signal=USR1@120 before a time-out
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    timeout_signal: str | None = "SIGUSR1"  # under SLURM, a run stopped by it requeues itself (scontrol requeue)
    max_timeouts: int = 10  # ... at most this many times: a run that never finishes does not loop


@dataclass
class RunConfig:
    # modules of your own to import before the config is checked (their registrations: objectives, criteria,
    # models, samplers, callbacks, ...), e.g. [mylab.methods]; importable from the working folder or PYTHONPATH
    imports: list[str] = field(default_factory=list)
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ComponentConfig = _component("preact_resnet18")
    attack: AttackConfig = field(default_factory=AttackConfig)
    objective: ComponentConfig = _component("pgd_at")  # standard, pgd_at, trades, fast_at
    criterion: ComponentConfig = _component("ce")  # ce, label_smoothing, tfkd, kd
    perturbation: ComponentConfig = _component("none")  # none, awp, rwp
    averaging: ComponentConfig = _component("none")  # none, swa, iswa, ema
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    extra: ExtraConfig = field(default_factory=ExtraConfig)
    # registered callbacks (atlens.training.callbacks.CALLBACKS) and loggers (atlens.training.loggers.LOGGERS),
    # each a name or {name: ..., option: value}: e.g. loggers: [{name: wandb, project: atlens}]
    callbacks: list[Any] = field(default_factory=list)
    loggers: list[Any] = field(default_factory=list)
    # what a paper reports for this setting (free-form; shown beside the measured numbers in reports)
    reported: dict[str, Any] = field(default_factory=dict)


# Sections whose keys other than the fixed fields are options of the named component.
COMPONENT_SECTIONS = ("data", "model", "objective", "criterion", "perturbation", "averaging", "optim")


def _build_section(cls: type, raw: Any, path: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "options"}
    component = path in COMPONENT_SECTIONS
    unknown = sorted(set(raw) - set(fields))
    if unknown and not component:
        close = [m for k in unknown for m in difflib.get_close_matches(str(k), list(fields), n=1)]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{path}.{k}' if path else str(k) for k in unknown)}{hint}; "
            f"allowed in {path or 'the top level'}: {', '.join(sorted(fields))}"
        )
    values = {}
    for name in fields:
        key = f"{path}.{name}" if path else name
        if name not in raw:
            continue
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build_section(hints[name], raw[name], key)
        else:
            values[name] = coerce(raw[name], hints[name], key)
    if cls is ComponentConfig:
        values.setdefault("name", getattr(RunConfig(), path).name)
    section = cls(**values)
    if component:
        # a component's own options are checked against its registered builder when the run is
        # checked or built (atlens.training.build), not here: the schema knows no component
        section.options = {k: raw[k] for k in unknown}
    return section


def require_count(value: int | None, key: str) -> int | None:
    """A count of examples (or steps) is a whole number >= 1, or None for "all" / the default."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{key} must be a whole number >= 1, got {value!r}")
    return value


def _check_ranges(cfg: RunConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    a = cfg.attack
    need(math.isfinite(a.epsilon) and a.epsilon > 0,
         f"attack.epsilon must be a finite number > 0 (e.g. 8/255), got {a.epsilon}")
    need(a.norm != "linf" or a.epsilon <= 1,
         f"attack.epsilon: an L∞ budget is at most 1 on images in [0, 1] (8/255 is usual), got {a.epsilon:g}")
    need(a.steps >= 1, f"attack.steps must be >= 1, got {a.steps}")
    need(a.step_size is None or a.step_size > 0, "attack.step_size must be > 0")
    d = cfg.data
    need(d.val_split >= 0, f"data.val_split must be >= 0, got {d.val_split}")
    need(d.per_class is None or d.per_class >= 1, "data.per_class must be >= 1")
    need(d.per_class_start >= 0, f"data.per_class_start must be >= 0, got {d.per_class_start}")
    need(d.unlabelled >= 0, f"data.unlabelled must be >= 0 (a number of inputs), got {d.unlabelled}")
    need(0 <= d.label_noise < 1, f"data.label_noise must be in [0, 1), got {d.label_noise}")
    need(d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}")
    need(d.epoch == "labelled" or d.epoch >= 1,
         f"data.epoch: labelled (one pass over the labelled set) or a number of examples >= 1, got {d.epoch}")
    o = cfg.optim
    need(o.epochs >= 1, f"optim.epochs must be >= 1, got {o.epochs}")
    need(math.isfinite(o.lr) and o.lr > 0, f"optim.lr must be a finite number > 0, got {o.lr}")
    need(0 < o.gamma <= 1, f"optim.gamma (the decay factor) must be in (0, 1], got {o.gamma}")
    need(0 <= o.warmup < o.epochs,
         f"optim.warmup (epochs of linear warm-up) must be in [0, optim.epochs), got {o.warmup}")
    need(all(0 < m < 1 for m in o.milestones),
         f"optim.milestones are fractions of the run in (0, 1), got {o.milestones}")
    e = cfg.eval
    need(e.steps >= 1, f"eval.steps must be >= 1, got {e.steps}")
    need(e.restarts >= 1, f"eval.restarts must be >= 1, got {e.restarts}")
    need(e.every >= 1, f"eval.every must be >= 1, got {e.every}")
    require_count(e.examples, "eval.examples")
    need(cfg.checkpoint.every >= 0, "checkpoint.every must be >= 0")
    need(cfg.analysis.cas_every >= 0, "analysis.cas_every must be >= 0")
    need(cfg.runtime.max_timeouts >= 0, f"runtime.max_timeouts must be >= 0, got {cfg.runtime.max_timeouts}")
    need(cfg.runtime.amp in (False, True, "bf16", "fp16", "bf16-emulated"),
         f"runtime.amp: expected false, true, bf16, fp16 or bf16-emulated, got {cfg.runtime.amp!r}")
    s = cfg.early_stop
    need(0 < s.small_loss_limit < 1, f"early_stop.small_loss_limit must be in (0, 1), got {s.small_loss_limit}")
    need(s.cas_window >= 1 and s.patience >= 1, "early_stop.cas_window and early_stop.patience must be >= 1")
    need(0 <= s.cas_drop < 1, f"early_stop.cas_drop must be in [0, 1), got {s.cas_drop}")
    rule = as_component(s.rule, "early_stop.rule").name
    need(rule != "val" or bool(cfg.data.val_split),
         "early_stop.rule val selects by validation robust accuracy: set data.val_split (e.g. 0.1)")
    need(rule != "unlabelled" or cfg.data.unlabelled > 0,
         "early_stop.rule unlabelled selects by stability on unlabelled inputs: set data.unlabelled (e.g. 500)")
    need(cfg.eval.amp in (False, True, "bf16", "bf16-emulated"),
         f"eval.amp: expected false, true (bf16), bf16 or bf16-emulated, got {cfg.eval.amp!r}")
    x = cfg.extra
    need(0 <= x.fraction < 1, f"extra.fraction must be in [0, 1) (the share of each batch), got {x.fraction}")
    need(x.take is None or x.take >= 1, f"extra.take must be >= 1, got {x.take}")
    need(x.labels != "pseudo" or x.teacher is not None,
         "extra.labels pseudo needs extra.teacher: a standard model's run directory, checkpoint, or {config: FILE}")
    need(x.teacher is None or x.labels == "pseudo",
         "extra.teacher labels the extra data only with extra.labels: pseudo")
    as_component(x.sampler, "extra.sampler")
    as_component(o.schedule, "optim.schedule")
    for key in ("callbacks", "loggers"):
        for i, entry in enumerate(getattr(cfg, key)):
            as_component(entry, f"{key}[{i}]")
    need(cfg.runtime.device == "auto" or cfg.runtime.device.split(":")[0] in ("cpu", "cuda", "mps"),
         f"runtime.device: expected auto, cpu, cuda or cuda:N, got {cfg.runtime.device!r}")


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """A validated RunConfig; the modules under ``imports`` are imported first, so the components they register
    exist for every later check (train, --dry-run, --resume, torchrun's processes, sweeps and reports all read
    configs through here)."""
    if isinstance(raw, dict) and "imports" in raw:
        import_modules(coerce(raw["imports"], list[str], "imports"), "imports")
    cfg = _build_section(RunConfig, raw, "")
    _check_ranges(cfg)
    return cfg


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 numbers (``5e-4`` and ``1e6`` are floats, not strings, as
    researchers write them) and duplicate keys refused with their line numbers."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as Python values (numbers as YAML 1.2 reads them); errors name ``source``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source} is not valid YAML{line}: {problem}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a raw config mapping."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
        node[leaf] = parse_yaml(text, f"--set {key.strip()}")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} cannot be read: {err}") from None
        raw = parse_yaml(text, str(path))
        if raw is None:
            raise ConfigError(f"{path} is empty; a run config needs at least the sections that differ from the "
                              f"defaults (see configs/ for examples)")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    return config_from_dict(apply_overrides(raw, overrides or []))


def dotted(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys: ``{"optim": {"lr": 0.1}}`` as ``{"optim.lr": 0.1}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The resolved configuration, with component options flattened back into their section."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            section = {k: v for k, v in dataclasses.asdict(value).items() if k != "options"}
            section.update(getattr(value, "options", {}))
            out[f.name] = section
        else:
            out[f.name] = value
    return out
