"""The notebook face of atlens: load or wrap a model, evaluate it, compute its CAS, train a run.

    import atlens
    model = atlens.load_model("torchvision:resnet18", weights="w.pt", num_classes=10, normalize="cifar10")
    data = atlens.load_dataset("cifar10", root="data/cifar10")
    atlens.evaluate(model, data, attacks=["pgd20", "autoattack"], epsilon=8/255)
    result = atlens.cas(model, data, plot="cas.png")

``data`` is an atlens dataset (``load_dataset``), a ``torch.utils.data.Dataset`` or ``DataLoader`` of (image,
label) pairs, or a pair of tensors; images in [0, 1]. ``model`` is an atlens model or any ``nn.Module`` whose
inputs are in [0, 1] (it is wrapped with ``atlens.wrap``; wrap it yourself to put a normalisation in front).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from atlens.analysis.cas import CASResult, compute_cas, plot_cas
from atlens.attacks import ThreatModel, threat_model
from atlens.config import RunConfig, apply_overrides, config_from_dict, config_to_dict, load_config
from atlens.data import ImageTensors, PreparedData
from atlens.errors import ConfigError
from atlens.evaluation import PGDAttack
from atlens.evaluation.attacks import ATTACKS, Context
from atlens.evaluation.suite import evaluate_attacks, evaluate_model
from atlens.files import write_json
from atlens.models import WrappedClassifier, wrap
from atlens.models.specs import ModelSource, is_torchscript, load_external
from atlens.runs import RunDirectory, replacing
from atlens.runs import load_model as load_run_model
from atlens.training.run import train_to_completion


def load_model(source: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu",
               **options: Any) -> nn.Module:
    """A trained model in eval mode: from a run directory (``checkpoint``: best, last, epoch-N), an atlens
    checkpoint file, or a model spec (timm:NAME, torchvision:NAME, robustbench:NAME, a TorchScript file,
    module.path:factory) with the options of ``atlens.models.specs.ModelSource`` (weights, num_classes,
    normalize or mean/std, head, threat, dataset, model_dir)."""
    path = Path(source)
    if not options and (path.is_dir() or (path.is_file() and not is_torchscript(path))):
        return load_run_model(path, checkpoint, device)
    return load_external(ModelSource(str(source), **options))[0].to(device)


def as_classifier(model: nn.Module) -> nn.Module:
    """``model`` if it honours atlens' contract (``features`` and a linear ``head``), else ``atlens.wrap(model)``."""
    if callable(getattr(model, "features", None)) and isinstance(getattr(model, "head", None), nn.Linear):
        return model
    return wrap(model)


def as_image_data(data: Any, classes: Sequence[str] | None = None) -> ImageTensors:
    """``data`` as atlens' in-memory images: an ImageTensors or PreparedData (its test split) as it is; a
    Dataset or DataLoader of (image, label) pairs, or an (images, labels) pair, gathered into tensors."""
    if isinstance(data, PreparedData):
        images = ImageTensors(data.test.images, data.test.labels, data.info.classes)
    elif isinstance(data, ImageTensors):
        images = data
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images = ImageTensors(data[0].float() if data[0].is_floating_point() else data[0], data[1])
    elif isinstance(data, (DataLoader, Dataset)):
        batches = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=256)
        xs, ys = [], []
        for batch in batches:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor)):
                raise ConfigError("the data must yield (image tensor, label) pairs; give torchvision datasets "
                                  "transform=transforms.ToTensor()")
            xs.append(batch[0])
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise ConfigError("the data is empty")
        images = ImageTensors(torch.cat(xs), torch.cat(ys), getattr(getattr(data, "dataset", data), "classes", None))
    else:
        raise ConfigError(f"data must be an atlens dataset, a Dataset, a DataLoader or (images, labels) tensors, "
                          f"got {type(data).__name__}")
    if images.images.is_floating_point() and len(images) and (images.images.min() < 0 or images.images.max() > 1):
        raise ConfigError("images must be in [0, 1] (atlens normalises inside the model: atlens.wrap(model, mean, "
                          "std) instead of normalising the data)")
    if classes is not None:
        images = ImageTensors(images.images, images.labels, list(classes))
    return images


def _class_names(model: nn.Module, data: ImageTensors) -> list[str]:
    num_classes = model.head.out_features
    names = data.classes or (model.classes if isinstance(model, WrappedClassifier) else None)
    present = int(data.labels.max()) + 1 if len(data) else 0
    if present > num_classes:
        raise ConfigError(f"the data has labels up to {present - 1} but the model has {num_classes} outputs")
    if names is not None and len(names) != num_classes:
        raise ConfigError(f"the model has {num_classes} outputs but the data names {len(names)} classes")
    return list(names) if names is not None else [str(i) for i in range(num_classes)]


def evaluate(model: nn.Module, data: Any, attacks: Sequence[str] = ("clean", "pgd20", "autoattack"),
             epsilon: float | None = None, norm: str = "linf", examples: int | None = None, seed: int = 0,
             device: str | torch.device = "cpu", out: str | Path | None = None, label: str = "model",
             precision: bool | str = False, autoattack_precision: bool | str = False,
             overwrite: bool = False) -> dict[str, float]:
    """Accuracy (0..1) under each named attack (clean, fgsm, pgdN, cw, autoattack) on ``examples`` examples
    drawn class-balanced by ``seed`` (all by default). With ``out``, also ``out/eval-<label>.json`` and the
    accuracy-vs-budget figure (an earlier result there is replaced only with ``overwrite``, kept aside).
    ``precision="bf16"`` crafts the gradient attacks under bf16 autocast (where
    the device has bf16), ``autoattack_precision`` AutoAttack (fp32 unless asked); every example is judged
    in fp32."""
    model = as_classifier(model).to(device).eval()
    images = as_image_data(data).evaluation_subset(examples, seed)
    threat = threat_model(norm, epsilon)
    if out is not None:
        report = evaluate_model(model, images, threat, Path(out), label, list(attacks), model.head.out_features,
                                seed, device, precision=precision, autoattack_precision=autoattack_precision,
                                overwrite=overwrite)
        return {name: result["accuracy"] for name, result in report["attacks"].items()}
    specs = [ATTACKS.build(name, Context(model, threat, model.head.out_features, seed, device)) for name in attacks]
    results = evaluate_attacks(model, images, specs, device=device, seed=seed, precision=precision,
                               autoattack_precision=autoattack_precision)
    return {name: result["accuracy"] for name, result in results.items()}


def _cas_attack(attack: str | None, threat: ThreatModel) -> PGDAttack | None:
    if attack in (None, "clean"):
        return None
    if not ATTACKS.is_pgd(attack):
        raise ConfigError(f"attack: expected pgdN (e.g. pgd20) or clean, got {attack!r}")
    return PGDAttack(threat, ATTACKS.pgd_steps(attack))


def cas(model: nn.Module, data: Any, attack: str | None = "pgd20", epsilon: float | None = None, norm: str = "linf",
        examples: int | None = None, seed: int = 0, device: str | torch.device = "cpu",
        plot: str | Path | None = None, instance: bool = False, overwrite: bool = False) -> CASResult:
    """The cross-class attribution matrix of ``model`` on ``data`` attacked by ``attack`` (pgdN, or clean):
    ``result.matrix``, ``result.cas``, ``result.classes``. ``plot="cas.png"`` writes the heat map there and
    the JSON beside it (an earlier one is replaced only with ``overwrite``, kept aside)."""
    model = as_classifier(model).to(device).eval()
    images = as_image_data(data).evaluation_subset(examples, seed)
    classes = _class_names(model, images)
    plot = None if plot is None else Path(plot)
    with replacing(plot.parent, [plot.with_suffix(".json").name], overwrite) if plot is not None else nullcontext():
        result = compute_cas(model, images, classes, _cas_attack(attack, threat_model(norm, epsilon)), device=device,
                             instance=instance, seed=seed)
        if plot is not None:
            plot.parent.mkdir(parents=True, exist_ok=True)
            write_json(plot.with_suffix(".json"), result.to_json())
            plot_cas(result, plot.with_suffix(".png"), plot.stem)
    return result


def instance_cas(model: nn.Module, data: Any, attack: str | None = "pgd20", epsilon: float | None = None,
                 norm: str = "linf", examples: int | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", plot: str | Path | None = None,
                 overwrite: bool = False) -> CASResult:
    """``cas`` with the instance-wise matrix and I-CAS too (``result.instance_matrix``, ``result.icas``)."""
    return cas(model, data, attack, epsilon, norm, examples, seed, device, plot, instance=True, overwrite=overwrite)


def train(config: str | Path | dict | RunConfig, out: str | Path, overrides: Sequence[str] = (),
          resume: bool = True) -> RunDirectory:
    """Train (or finish) the run ``config`` describes (a YAML path, a dict or a RunConfig) in ``out``;
    returns the run directory (``run.read_summary()``, ``atlens.load_model(run.path)``)."""
    if isinstance(config, RunConfig):
        config = config_to_dict(config)
    if isinstance(config, dict):
        cfg = config_from_dict(apply_overrides(copy.deepcopy(config), list(overrides)))
    else:
        cfg = load_config(config, list(overrides))
    train_to_completion(cfg, out, resume=resume)
    return RunDirectory(out)
