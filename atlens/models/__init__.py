"""Model registry. Builders receive the dataset's shape and statistics plus user options."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from atlens.errors import ConfigError
from atlens.models.base import (
    Forward,
    ImageClassifier,
    Normalize,
    check_contract,
    forward_with_features,
    import_timm,
    prefers_channels_last,
)
from atlens.models.resnets import PreActResNetBody, ResNetBody, wide_resnet_body
from atlens.models.wrap import WrappedClassifier, find_head, wrap
from atlens.registry import Registry

__all__ = ["MODELS", "Forward", "ImageClassifier", "Normalize", "WrappedClassifier", "build_model", "check_contract",
           "find_head", "forward_with_features", "prefers_channels_last", "wrap"]

# Arguments atlens supplies from the dataset; everything else is a user option.
_PROVIDED = ("num_classes", "channels", "image_size", "mean", "std")
MODELS: Registry[ImageClassifier] = Registry("model", skip=_PROVIDED)


def _classifier(body: nn.Module, dim: int, num_classes: int, mean, std) -> ImageClassifier:
    return ImageClassifier(Normalize(mean, std), body, dim, num_classes)


@MODELS.register("preact_resnet18")
def preact_resnet18(num_classes, channels, image_size, mean, std, width: int = 64) -> ImageClassifier:
    body = PreActResNetBody(channels, width, [width, 2 * width, 4 * width, 8 * width], [2, 2, 2, 2])
    return _classifier(body, body.out_dim, num_classes, mean, std)


@MODELS.register("resnet18")
def resnet18(num_classes, channels, image_size, mean, std, width: int = 64) -> ImageClassifier:
    body = ResNetBody(channels, width)
    return _classifier(body, body.out_dim, num_classes, mean, std)


@MODELS.register("wrn")
def wrn(num_classes, channels, image_size, mean, std, depth: int = 34, widen_factor: int = 10,
        dropout: float = 0.0, activation: str = "relu") -> ImageClassifier:
    body = wide_resnet_body(channels, depth, widen_factor, dropout, activation)
    return _classifier(body, body.out_dim, num_classes, mean, std)


@MODELS.register("vgg16_bn")
def vgg16_bn(num_classes, channels, image_size, mean, std, width: int = 64) -> ImageClassifier:
    plan = [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"]
    layers: list[nn.Module] = []
    cin = channels
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(2) if image_size >= 2 else nn.Identity())
            image_size //= 2
            continue
        cout = width * item
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        cin = cout
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return _classifier(body, cin, num_classes, mean, std)


@MODELS.register("deit_tiny")
def deit_tiny(num_classes, channels, image_size, mean, std, patch_size: int = 4, depth: int = 12,
              embed_dim: int = 192, heads: int = 3) -> ImageClassifier:
    """DeiT-Tiny from timm sized for small images; features are the final class token."""
    VisionTransformer = import_timm().models.vision_transformer.VisionTransformer  # noqa: N806

    body = VisionTransformer(img_size=image_size, patch_size=patch_size, in_chans=channels, num_classes=0,
                             embed_dim=embed_dim, depth=depth, num_heads=heads, global_pool="token")
    return _classifier(body, embed_dim, num_classes, mean, std)


@MODELS.register("cnn")
def cnn(num_classes, channels, image_size, mean, std, width: int = 32, hidden: int = 128) -> ImageClassifier:
    """A small VGG-like network for tests and CPU studies."""
    body = nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(8 * width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
    )
    return _classifier(body, hidden, num_classes, mean, std)


@MODELS.register("mlp")
def mlp(num_classes, channels, image_size, mean, std, hidden: list[int] | None = None) -> ImageClassifier:
    layers: list[nn.Module] = [nn.Flatten()]
    cin = channels * image_size * image_size
    for width in hidden if hidden is not None else [256, 256]:
        layers += [nn.Linear(cin, width), nn.ReLU()]
        cin = width
    return _classifier(nn.Sequential(*layers), cin, num_classes, mean, std)


@MODELS.register("torchvision")
def torchvision_model(num_classes, channels, image_size, mean, std, arch: str = "resnet18") -> nn.Module:
    """A torchvision classification architecture (random initialisation), behind atlens' normalisation;
    ``wrapped.model.state_dict()`` is the state dict torchvision's model reads."""
    import torchvision

    if arch not in torchvision.models.list_models(torchvision.models):
        raise ConfigError(f"model.arch: torchvision has no classification model {arch!r} (e.g. resnet18, "
                          f"resnet50, vgg11_bn, mobilenet_v3_small, vit_b_16)")
    if channels != 3:
        raise ConfigError(f"model.arch {arch}: torchvision's models take 3 channels, the data has {channels}")
    return wrap(torchvision.models.get_model(arch, weights=None, num_classes=num_classes), mean, std)


@MODELS.register("timm")
def timm_model(num_classes, channels, image_size, mean, std, arch: str = "resnet18",
               kwargs: dict | None = None) -> nn.Module:
    """A timm architecture (random initialisation; ``kwargs`` go to ``timm.create_model``), behind atlens'
    normalisation."""
    timm = import_timm()
    if not timm.is_model(arch):
        raise ConfigError(f"model.arch: timm has no model {arch!r} (timm.list_models() lists them)")
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=channels, **(kwargs or {}))
    return wrap(model, mean, std)


def build_model(name: str, num_classes: int, channels: int, image_size: int, mean: Sequence[float],
                std: Sequence[float], options: dict | None = None) -> ImageClassifier:
    return MODELS.build(name, options or {}, "model", num_classes=num_classes, channels=channels,
                        image_size=image_size, mean=mean, std=std)
