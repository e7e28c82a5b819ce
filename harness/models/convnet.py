"""The DD ConvNet family (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021).

ConvNet-D3-W128: ``depth x [Conv3x3(width) -> norm -> act -> pool]`` -> flatten -> Linear.
Defaults: width 128, depth 3, ``instancenorm`` = GroupNorm(C, C), ReLU, 2x2 average pooling.
The 28x28 rule: on 1-channel 28x28 input the first conv pads by 3 (28 -> 32), so MNIST and CIFAR
share the 2048-d feature (128 x 4 x 4). Variants are registered into timm by the names DC/MTT use.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.errors import ConfigError
from harness.models.layers import ACTIVATIONS, NORMS, POOLINGS


class ConvNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 32,
        width: int = 128,
        depth: int = 3,
        norm: str = "instancenorm",
        act: str = "relu",
        pooling: str = "avgpooling",
    ) -> None:
        super().__init__()
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        layers: list[nn.Module] = []
        c_in = in_chans
        for d in range(depth):
            pad = 3 if (d == 0 and in_chans == 1 and (h, w) == (28, 28)) else 1
            layers.append(nn.Conv2d(c_in, width, kernel_size=3, padding=pad))
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            norm_layer = NORMS.get(norm)(width, (h, w))
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(ACTIVATIONS.get(act)())
            pool = POOLINGS.get(pooling)()
            if pool is not None:
                if min(h, w) < 2:
                    raise ConfigError(f"ConvNet depth {depth} pools {img_size}px input below 1 pixel; "
                                      "use a smaller depth or larger images")
                layers.append(pool)
                h, w = h // 2, w // 2
            c_in = width
        self.features = nn.Sequential(*layers)
        self.num_features = width * h * w
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (DM's embedding)."""
        return self.features(x).flatten(1)

    forward_features = embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# name -> ConvNet keyword overrides; the names follow the reference's ConvNetD4, ConvNetW64, ...
CONVNET_VARIANTS: dict[str, dict] = {
    "convnet": {},
    **{f"convnet_d{d}": {"depth": d} for d in (1, 2, 3, 4, 5, 6)},
    **{f"convnet_w{w}": {"width": w} for w in (32, 64, 128, 256)},
    "convnet_nn": {"norm": "none"},
    "convnet_bn": {"norm": "batchnorm"},
    "convnet_ln": {"norm": "layernorm"},
    "convnet_in": {"norm": "instancenorm"},
    "convnet_gn": {"norm": "groupnorm"},
    "convnet_np": {"pooling": "none"},
    "convnet_mp": {"pooling": "maxpooling"},
    "convnet_ap": {"pooling": "avgpooling"},
    "convnet_as": {"act": "sigmoid"},
    "convnet_ar": {"act": "relu"},
    "convnet_al": {"act": "leakyrelu"},
    "convnet_aswish": {"act": "swish"},
}
