"""Norm, activation and pooling layers by the names the DC/MTT papers use."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.registry import Registry

NORMS: Registry[Callable[[int, tuple[int, int]], nn.Module | None]] = Registry("norm")
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
POOLINGS: Registry[Callable[[], nn.Module | None]] = Registry("pooling")


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


# instancenorm is GroupNorm(C, C) as in the reference code; layernorm normalises (C, H, W).
NORMS.register("instancenorm", lambda c, hw: nn.GroupNorm(c, c, affine=True))
NORMS.register("batchnorm", lambda c, hw: nn.BatchNorm2d(c, affine=True))
NORMS.register("layernorm", lambda c, hw: nn.LayerNorm([c, *hw], elementwise_affine=True))
NORMS.register("groupnorm", lambda c, hw: nn.GroupNorm(4, c, affine=True))
NORMS.register("none", lambda c, hw: None)

ACTIVATIONS.register("relu", lambda: nn.ReLU(inplace=True))
ACTIVATIONS.register("sigmoid", nn.Sigmoid)
ACTIVATIONS.register("leakyrelu", lambda: nn.LeakyReLU(negative_slope=0.01))
ACTIVATIONS.register("swish", Swish)

POOLINGS.register("avgpooling", lambda: nn.AvgPool2d(kernel_size=2, stride=2))
POOLINGS.register("maxpooling", lambda: nn.MaxPool2d(kernel_size=2, stride=2))
POOLINGS.register("none", lambda: None)


def norm2d(kind: str, c: int) -> nn.Module:
    """``instancenorm`` (GroupNorm(C, C)) or ``batchnorm`` for the DC-paper VGG/ResNet/AlexNet."""
    layer = NORMS.get(kind)(c, (1, 1))
    if layer is None or isinstance(layer, nn.LayerNorm):
        raise ValueError(f"norm {kind!r} is not available for this network")
    return layer
