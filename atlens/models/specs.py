"""Models from outside atlens, named by a spec: ``timm:NAME``, ``torchvision:NAME``, ``robustbench:NAME``,
a TorchScript file, or ``module.path:factory`` (a callable in the user's code returning an ``nn.Module``).

Weights are read without running code: ``.safetensors`` through the safetensors library, ``.pt``/``.pth``
with ``torch.load(weights_only=True)``. A TorchScript file is a program by definition; it is loaded only
when named as the model.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlens.errors import CheckpointError, ConfigError, ModelContractError
from atlens.models.base import import_timm, prefers_channels_last
from atlens.models.weights import load_torch_file, load_weights
from atlens.models.wrap import WrappedClassifier, normalization, wrap

SPEC_FORMS = ("timm:NAME, torchvision:NAME, robustbench:NAME, a TorchScript file (.ts/.pt saved by torch.jit.save) "
              "or module.path:factory")


@dataclass
class ModelSource:
    """How to build an outside model: what ``atlens eval|cas|analyze --model`` and ``atlens.load_model`` take."""

    spec: str
    weights: str | None = None
    num_classes: int | None = None
    normalize: str | None = None  # imagenet, cifar10, none (None: the source's default)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    head: str | None = None
    threat: str = "Linf"  # RobustBench's leaderboard: Linf, L2, corruptions
    dataset: str = "cifar10"  # RobustBench's dataset
    model_dir: str | None = None  # RobustBench's local model folder (default ./models, as RobustBench's own)
    classes: Sequence[str] | None = field(default=None, repr=False)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``.pt``/``.pth`` file (also inside ``{"state_dict": ...}`` or
    ``{"model": ...}``, with DataParallel's ``module.`` prefix removed), never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None
    state = load_torch_file(path, refusal="atlens reads weights with weights_only=True: save model.state_dict() "
                                          "instead", damaged="damaged or not a PyTorch file")
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict (a mapping of names to tensors); save model.state_dict()")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _torchvision(name: str, source: ModelSource) -> tuple[nn.Module, tuple | None]:
    num_classes = source.num_classes
    import torchvision

    if name not in torchvision.models.list_models(torchvision.models):
        raise ConfigError(f"torchvision has no classification model {name!r} (e.g. resnet18, resnet50, vgg11_bn, "
                          f"mobilenet_v3_small)")
    model = torchvision.models.get_model(name, weights=None, **({"num_classes": num_classes} if num_classes else {}))
    return model, normalization("imagenet")  # every torchvision classification weight's transform


def _timm(name: str, source: ModelSource) -> tuple[nn.Module, tuple | None]:
    num_classes = source.num_classes
    timm = import_timm()
    if not timm.is_model(name):
        raise ConfigError(f"timm has no model {name!r} (timm.list_models() lists them)")
    model = timm.create_model(name, pretrained=False, **({"num_classes": num_classes} if num_classes else {}))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    stats = (tuple(cfg["mean"]), tuple(cfg["std"])) if "mean" in cfg and "std" in cfg else None
    return model, stats


def _robustbench(name: str, source: ModelSource) -> tuple[nn.Module, None]:
    """RobustBench's model zoo; its models normalise their inputs themselves."""
    try:
        import pyautoattack

        # RobustBench's release imports AutoAttack as `autoattack`; PyPI ships the same package as `pyautoattack`
        sys.modules.setdefault("autoattack", pyautoattack)
        import_timm()  # before RobustBench imports it
        from robustbench.utils import load_model as robustbench_model
    except ImportError as err:
        raise ConfigError(f"robustbench:{name} needs RobustBench: pip install 'atlens[robustbench]' ({err})") from None
    model_dir = source.model_dir or "./models"
    where = Path(model_dir) / source.dataset / source.threat / f"{name}.pt"
    try:
        return robustbench_model(model_name=name, model_dir=model_dir, dataset=source.dataset,
                                 threat_model=source.threat), None
    except KeyError:
        raise ConfigError(f"RobustBench lists no model {name!r} for {source.dataset} {source.threat} (see "
                          f"robustbench.model_zoo or robustbench.github.io)") from None
    except ValueError as err:
        raise ConfigError(f"robustbench:{name}: {err}") from None
    except Exception as err:  # noqa: BLE001 (the download's failures come in many types)
        if where.is_file():
            raise CheckpointError(f"robustbench:{name}: {where} could not be loaded ({str(err)[:200]})") from None
        raise CheckpointError(f"robustbench:{name}: RobustBench could not fetch the weights ({type(err).__name__}); "
                              f"without network access, place them at {where} (--model-dir sets the folder)") from None


def _torchscript(path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation: the field's files remain
            return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:160]
        raise CheckpointError(f"{path} is not a TorchScript file ({first}); for a state dict, name the "
                              f"architecture (e.g. --model torchvision:resnet18 --weights {path})") from None


def _factory(spec: str, num_classes: int | None) -> nn.Module:
    module_name, _, attribute = spec.rpartition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the user's code, as `python -m` would find it
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"unknown model spec {spec!r}: module {module_name!r} cannot be imported ({err}); "
                          f"expected {SPEC_FORMS}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"{module_name} has no callable {attribute!r} (the spec module.path:factory names a "
                          f"function or class returning an nn.Module)")
    model = factory(num_classes=num_classes) if num_classes else factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{spec} returned a {type(model).__name__}, not an nn.Module")
    return model


# prefix -> builder of (model, the normalisation its weights expect)
SOURCES = {"torchvision": _torchvision, "timm": _timm, "robustbench": _robustbench}


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding code/ and constants.pkl; a state dict saved by torch.save is not."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("constants.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_external(source: ModelSource) -> tuple[WrappedClassifier, dict[str, Any]]:
    """The outside model ``source`` names, wrapped (``atlens.wrap``), in eval mode on the CPU, and a
    description of it to record beside every result."""
    spec = source.spec
    prefix, sep, name = spec.partition(":")
    stats: tuple | None = None
    path = Path(spec)
    if path.suffix in (".ts", ".pt", ".pth", ".jit") and path.is_file():
        if not is_torchscript(path):
            raise ConfigError(f"{path} is not a TorchScript file; for a state dict, name the architecture "
                              f"(e.g. --model torchvision:resnet18 --weights {path})")
        kind, model = "torchscript", _torchscript(path)
    elif sep and prefix in SOURCES:
        kind, (model, stats) = prefix, SOURCES[prefix](name, source)
    elif sep and re.fullmatch(r"[A-Za-z_][\w.]*", prefix) and re.fullmatch(r"[A-Za-z_]\w*", name):
        kind, model = "factory", _factory(spec, source.num_classes)
    elif path.suffix in (".ts", ".pt", ".pth", ".jit"):
        raise ConfigError(f"model file {path} does not exist")
    else:
        raise ConfigError(f"unknown model spec {spec!r}: expected {SPEC_FORMS}")
    if source.weights:
        if kind in ("torchscript", "robustbench"):
            raise ConfigError(f"--weights does not apply to {kind} models, which bring their own")
        load_weights(model, read_state_dict(source.weights), f"weights {source.weights} (for {spec})",
                     hint="give the --model the weights were saved from (and its --num-classes)")
    if source.normalize is not None or source.mean is not None or source.std is not None:
        stats = normalization(source.normalize, source.mean, source.std)
    model = model.eval()
    try:
        wrapped = wrap(model, *(stats or (None, None)), head=source.head)
    except ModelContractError as err:
        raise ModelContractError(f"{spec}: {err}") from None
    if source.classes is not None:
        if len(source.classes) != wrapped.num_classes:
            hint = f"; pass --num-classes {len(source.classes)}" if kind in ("timm", "torchvision") else ""
            raise ConfigError(f"{spec} has {wrapped.num_classes} outputs but the data has "
                              f"{len(source.classes)} classes{hint}")
        wrapped.classes = list(source.classes)
    description = {key: value for key, value in asdict(source).items()
                   if value is not None and key not in ("classes",)
                   and (kind == "robustbench" or key not in ("threat", "dataset", "model_dir"))}
    description.update(kind=kind, head=wrapped.head_path, num_classes=wrapped.num_classes,
                       normalization=({"mean": list(stats[0]), "std": list(stats[1])} if stats else "inside the model"))
    if source.weights:
        description["weights_sha256"] = sha256(source.weights)
    if kind != "torchscript" and prefers_channels_last(wrapped):  # as atlens loads its own runs' models
        wrapped = wrapped.to(memory_format=torch.channels_last)
    return wrapped.eval(), description
