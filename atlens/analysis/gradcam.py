"""Grad-CAM on the true class (captum's LayerGradCam), upsampled to the input's size."""

from __future__ import annotations

import torch
from torch import nn

from atlens.attacks.pgd import mode
from atlens.errors import ModelContractError


def feature_map_layer(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last convolution or convolutional block whose output is a spatial map larger than 1 x 1: a ResNet's
    final stage on CIFAR-sized inputs, its third stage where an ImageNet stem has shrunk the final map of a
    32 x 32 image to 1 x 1 (whose Grad-CAM would be a flat colour). Found by running ``example`` (one batch)
    through the model."""
    finished: list[tuple[nn.Module, int]] = []

    def record(module: nn.Module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            finished.append((module, min(output.shape[-2:])))

    root = getattr(model, "body", model)
    candidates = [m for m in root.modules() if m is not root and (isinstance(m, nn.Conv2d) or any(m.children()))]
    handles = [m.register_forward_hook(record) for m in candidates]
    try:
        with torch.no_grad(), mode(model, False):
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise ModelContractError(f"Grad-CAM needs a convolutional feature map; {type(root).__name__} has none "
                                 f"(vision transformers and MLPs are not supported)")
    spatial = [module for module, side in finished if side > 1]
    return (spatial or [module for module, _ in finished])[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: nn.Module | None = None) -> torch.Tensor:
    """[B, H, W] non-negative class-activation maps for class ``target[i]`` of input ``x[i]``."""
    from captum.attr import LayerAttribution, LayerGradCam

    layer = layer or feature_map_layer(model, x)
    with mode(model, False):
        maps = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    maps = LayerAttribution.interpolate(maps.detach().float(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return maps.squeeze(1).clamp_min(0)
