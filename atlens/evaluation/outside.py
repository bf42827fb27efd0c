"""A model from outside atlens (``atlens eval|cas|analyze --model SPEC --data NAME``), the data it is evaluated on
and the folder its results go to: a folder of its own, never a training run's."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from atlens.data import prepare_data
from atlens.data.tensors import to_unit_float
from atlens.errors import ConfigError
from atlens.models.specs import ModelSource, load_external
from atlens.runs import run_lock

# RobustBench's leaderboards by dataset; an image folder of CIFAR-10 images reads cifar10's
ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")


def builds_architecture(spec: str) -> bool:
    """Specs whose architecture atlens builds (and can size to the data's classes)."""
    return spec.startswith(("timm:", "torchvision:"))


def spec_label(spec: str) -> str:
    """A file-name-safe label for a model spec: timm:resnet18 -> timm-resnet18, path/m.ts -> m."""
    path = Path(spec)
    base = path.stem if path.suffix else spec
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip("-") or "model"


class OutsideModel:
    """The outside model ``spec`` (timm:NAME, torchvision:NAME, robustbench:NAME, a TorchScript file or
    module.path:factory) on ``device``, checked against atlens' contract on two images of ``data``."""

    def __init__(self, spec: str, data: str, root: str | None = None, weights: str | None = None,
                 num_classes: int | None = None, normalize: str | None = None, mean: list[float] | None = None,
                 std: list[float] | None = None, head: str | None = None, threat: str | None = None,
                 model_dir: str | None = None, device: str = "cpu", out: str | Path | None = None) -> None:
        self.data = prepare_data(data, root)
        info = self.data.info
        source = ModelSource(spec, weights, num_classes or (info.num_classes if builds_architecture(spec) else None),
                             normalize, mean, std, head, threat or "Linf",
                             data if data in ROBUSTBENCH_DATASETS else "cifar10", model_dir, info.classes)
        model, self.description = load_external(source)
        self.model = model.to(device)
        self.model.verify(to_unit_float(self.data.test.head(2).images).to(device))
        self.label = spec_label(spec)
        self.out = Path(out) if out is not None else Path("analyses") / self.label
        self.record: dict[str, Any] = {"model": self.description, "data": {"name": data, "root": root}}

    def claim(self) -> AbstractContextManager[None]:
        """The output folder, created and locked; a training run's folder is refused."""
        if (self.out / "config.yaml").is_file():
            raise ConfigError(f"{self.out} is a training run; an outside model's results go to a folder of their "
                              f"own: choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        return run_lock(self.out)
