"""CIFAR-style residual networks: PreActResNet-18, ResNet-18, WideResNet (bodies end in pooled features)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "silu": F.silu}  # silu is Swish (β = 1), as in Wang et al. 2023's WRN-28-10


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: expected {' or '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0, act: str = "relu") -> None:
        super().__init__()
        self.act = activation(act)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.act(self.bn2(out))
        if self.dropout:
            out = F.dropout(out, self.dropout, self.training)
        return self.conv2(out) + shortcut


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _stage(block, cin: int, cout: int, count: int, stride: int, **kw) -> tuple[nn.Sequential, int]:
    layers = []
    for s in [stride] + [1] * (count - 1):
        layers.append(block(cin, cout, s, **kw))
        cin = cout
    return nn.Sequential(*layers), cout


class PreActResNetBody(nn.Module):
    """Pre-activation residual network; features are taken after the final BN-ReLU and global
    average pooling. PreActResNet-18: stem = w, widths (w, 2w, 4w, 8w), two blocks per stage."""

    def __init__(self, in_channels: int, stem: int, widths: list[int], blocks: list[int], dropout: float = 0.0,
                 act: str = "relu") -> None:
        super().__init__()
        self.act = activation(act)
        self.stem = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        stages, cin = [], stem
        for i, (width, count) in enumerate(zip(widths, blocks)):
            stage, cin = _stage(PreActBlock, cin, width, count, 1 if i == 0 else 2, dropout=dropout, act=act)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(cin)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn(self.stages(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class ResNetBody(nn.Module):
    def __init__(self, in_channels: int, width: int, blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, cin = [], width
        for i, count in enumerate(blocks):
            stage, cin = _stage(BasicBlock, cin, width * 2**i, count, 1 if i == 0 else 2)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)


def wide_resnet_body(in_channels: int, depth: int, widen_factor: int, dropout: float = 0.0,
                     act: str = "relu") -> PreActResNetBody:
    """WRN-depth-k (Zagoruyko & Komodakis) with pre-activation blocks, as used for CIFAR AT; ``act`` is the
    activation (relu, or silu: the Swish of the generated-data recipes)."""
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4 (e.g. 28, 34), got {depth}")
    n = (depth - 4) // 6
    return PreActResNetBody(in_channels, 16, [16 * widen_factor, 32 * widen_factor, 64 * widen_factor], [n] * 3,
                            dropout, act)
