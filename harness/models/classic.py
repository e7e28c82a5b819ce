"""The other networks of the DC paper's cross-architecture table, plus CIFAR-style ResNets.

Architectures as in Zhao et al. (ICLR 2021): MLP (2 hidden layers of 128), LeNet, AlexNet(BN),
VGG11(BN) with instance norm by default, ResNet18 (instance norm by default; ``_bn`` BatchNorm;
``_bn_ap`` average pooling instead of strided convolutions). ``resnet18_cifar``/``resnet34_cifar``
are the BatchNorm CIFAR ResNets (3x3 stem, no max-pool) used by CCS, TDDS and DUAL.
On 1-channel 28x28 input the first layer pads so that the feature maps match 32x32 input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError
from harness.models.layers import norm2d


def _pair(s: int | tuple[int, int]) -> tuple[int, int]:
    return (s, s) if isinstance(s, int) else tuple(s)  # type: ignore[return-value]


def _is_mnist(in_chans: int, img_size) -> bool:
    return in_chans == 1 and _pair(img_size) == (28, 28)


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size=32) -> None:
        super().__init__()
        h, w = _pair(img_size)
        self.fc_1 = nn.Linear(in_chans * h * w, 128)
        self.fc_2 = nn.Linear(128, 128)
        self.fc_3 = nn.Linear(128, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc_2(F.relu(self.fc_1(x.flatten(1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_3(self.embed(x))


class _FeatureNet(nn.Module):
    """features -> flatten -> head, with the head sized by a dry run at construction."""

    def _finish(self, in_chans: int, img_size, head: nn.Module | None, num_classes: int) -> None:
        try:
            with torch.no_grad():
                n = self.features(torch.zeros(1, in_chans, *_pair(img_size))).flatten(1).shape[1]
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"{type(self).__name__} cannot take {in_chans}x{_pair(img_size)} input ({e})") from None
        self.num_features = n
        self.classifier = head(n) if head is not None else nn.Linear(n, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class LeNet(_FeatureNet):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size=32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, kernel_size=5, padding=2 if _is_mnist(in_chans, img_size) else 0),
            nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        )
        self._finish(in_chans, img_size, lambda n: nn.Sequential(
            nn.Linear(n, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes)), num_classes)


class AlexNet(_FeatureNet):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size=32, norm: str | None = None) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, k: int, pad: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size=k, padding=pad)]
            if norm:
                layers.append(norm2d(norm, c_out))
            return [*layers, nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_chans, 128, 5, 4 if _is_mnist(in_chans, img_size) else 2), nn.MaxPool2d(2, 2),
            *block(128, 192, 5, 2), nn.MaxPool2d(2, 2),
            *block(192, 256, 3, 1), *block(256, 192, 3, 1), *block(192, 192, 3, 1), nn.MaxPool2d(2, 2),
        )
        self._finish(in_chans, img_size, None, num_classes)


class VGG11(_FeatureNet):
    CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size=32, norm: str = "instancenorm") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_chans
        for i, v in enumerate(self.CFG):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            pad = 3 if (i == 0 and _is_mnist(in_chans, img_size)) else 1
            layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=pad), norm2d(norm, v), nn.ReLU(inplace=True)]
            c_in = v
        self.features = nn.Sequential(*layers)
        self._finish(in_chans, img_size, None, num_classes)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avgpool: bool) -> None:
        super().__init__()
        conv_stride = 1 if avgpool else stride
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm2d(norm, planes)
        self.pool = nn.AvgPool2d(2, 2) if (avgpool and stride != 1) else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            sc: list[nn.Module] = [nn.Conv2d(in_planes, planes, 1, stride=conv_stride, bias=False)]
            if avgpool and stride != 1:
                sc.append(nn.AvgPool2d(2, 2))
            self.shortcut = nn.Sequential(*sc, norm2d(norm, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.pool(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, four stages (64..512), global average pooling, linear head."""

    def __init__(self, blocks: tuple[int, ...], num_classes: int = 10, in_chans: int = 3, img_size=32,
                 norm: str = "instancenorm", avgpool: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm2d(norm, 64)
        layers: list[nn.Module] = []
        in_planes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride, norm, avgpool))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.num_features = 512
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
